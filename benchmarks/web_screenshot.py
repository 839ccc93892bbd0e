"""Screenshots of the web page and of an analysis report, in Debian's headless Chromium (/usr/bin/chromium
+ /usr/bin/chromedriver, through Selenium; `apt-get install chromium chromium-driver`).

    # the page tagging a sample post (its text, and its caption and image where the model reads them)
    python benchmarks/web_screenshot.py page RUN_DIR [--sample twitter2017_samples:test:1] [--entity 2] --output X.png
    # a report page as it opens (full length), optionally with sections opened, or one section only
    python benchmarks/web_screenshot.py report REPORT.html [--open attention] [--section attention] --output X.png
    # the set in docs/screenshots: the page with a text-only and with a caption model, a two-run report
    python benchmarks/web_screenshot.py docs --text-run TEXT_RUN --caption-run CAPTION_RUN

`page` serves RUN_DIR with `mmner serve` on a free loopback port, pastes the sample post's text, types its
caption and chooses its image when the page offers those inputs (a text-only model's page does not),
tags it, with `--entity N` clicks the N-th entity found (its own attention, for models that return
attention) and saves the screenshot. `docs` makes docs/screenshots/web-page-text.png (TEXT_RUN),
web-page.png (CAPTION_RUN, second entity clicked), and `mmner report TEXT_RUN CAPTION_RUN` into
runs/screenshots/report.html with report-two-runs.png (the page as it opens) and
report-two-runs-attention.png (its attention section opened).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_post(spec: str) -> dict:
    """`twitter2017_samples:test:1` -> the sample's text, caption and image path."""
    from mmner.data import datadir

    name, split, post_id = spec.split(":")
    folder = datadir.resolve(f"{name}:{split}")
    texts = {r["id"]: r for r in map(json.loads, (folder / "texts.json").read_text().splitlines())}
    captions = {r["id"]: r["caption"] for r in map(json.loads, (folder / "captions.json").read_text().splitlines())}
    post = texts[post_id]
    return {"text": post.get("text") or " ".join(post["tokens"]), "caption": captions.get(post_id, ""),
            "image": folder / post["image_id"]}


def chromium(width: int = 1280, height: int = 900):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                 "--hide-scrollbars", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def full_page(driver, output: Path) -> None:
    """The whole document, not only the window, as one PNG."""
    import base64

    size = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight];")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}})
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(base64.b64decode(shot["data"]))
    print(f"wrote {output} ({size[0]}x{size[1]} px)")


def page_shot(run_dir: Path, sample: str, entity: int | None, output: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    post = sample_post(sample)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mmner", "serve", str(run_dir), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = chromium()
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                break
            except Exception:  # noqa: BLE001 - the server is still loading the model
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("mmner serve did not come up")
                time.sleep(1)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-model") in ("loaded", "unavailable"))
        driver.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
                              driver.find_element(By.ID, "text"), post["text"])
        if driver.find_element(By.ID, "caption").is_displayed():
            driver.find_element(By.ID, "caption").send_keys(post["caption"])
        if driver.find_element(By.ID, "drop").is_displayed():
            driver.find_element(By.ID, "image").send_keys(str(Path(post["image"]).resolve()))
            wait.until(lambda d: d.find_element(By.ID, "preview").get_attribute("naturalWidth") not in (None, "0"))
        driver.find_element(By.ID, "tag").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("tagged", "error"))
        error = driver.find_element(By.ID, "error").text
        if error:
            raise SystemExit(f"the page reported: {error}")
        if entity is not None:
            marks = driver.find_elements(By.CSS_SELECTOR, "#tagged mark.ent")
            if not 1 <= entity <= len(marks):
                raise SystemExit(f"--entity {entity}: the model found {len(marks)} entities")
            marks[entity - 1].click()
        driver.execute_script("window.scrollTo(0, 0);")
        full_page(driver, output)
    finally:
        driver.quit()
        server.terminate()
        server.wait(10)


def report_shot(page: Path, output: Path, open_sections: list[str], section: str | None) -> None:
    from selenium.webdriver.common.by import By

    driver = chromium(1280, 900)
    try:
        driver.get(page.resolve().as_uri())
        for key in open_sections + ([section] if section else []):
            driver.execute_script("document.querySelector(`#${arguments[0]} > details`).open = true;", key)
        if section:
            output.parent.mkdir(parents=True, exist_ok=True)
            element = driver.find_element(By.ID, section)
            height = driver.execute_script("return arguments[0].getBoundingClientRect().height;", element)
            driver.set_window_size(1280, int(height) + 200)  # an element shot is cut at the window's edge
            element.screenshot(str(output))
            print(f"wrote {output} (section {section}, {int(height)} px tall)")
        else:
            full_page(driver, output)
    finally:
        driver.quit()


def docs_shots(text_run: Path, caption_run: Path, sample: str, entity: int, report_dir: Path) -> None:
    page_shot(text_run, sample, None, SHOTS / "web-page-text.png")
    page_shot(caption_run, sample, entity, SHOTS / "web-page.png")
    report = report_dir / "report.html"
    subprocess.run([sys.executable, "-m", "mmner", "report", str(text_run), str(caption_run), "--output", str(report)],
                   check=True, cwd=ROOT)
    report_shot(report, SHOTS / "report-two-runs.png", [], None)
    report_shot(report, SHOTS / "report-two-runs-attention.png", [], "attention")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    page = sub.add_parser("page", help="the web page serving RUN_DIR, tagging a sample post")
    page.add_argument("run_dir", type=Path)
    page.add_argument("--sample", default="twitter2017_samples:test:1")
    page.add_argument("--entity", type=int, default=None, help="click the N-th entity (1-based) before the shot")
    page.add_argument("--output", type=Path, default=SHOTS / "web-page.png")
    report = sub.add_parser("report", help="a report page (mmner report's HTML)")
    report.add_argument("page", type=Path)
    report.add_argument("--open", nargs="*", default=[], help="sections to open before the shot")
    report.add_argument("--section", default=None, help="shoot this section only (opened)")
    report.add_argument("--output", type=Path, required=True)
    docs = sub.add_parser("docs", help="the screenshots in docs/screenshots")
    docs.add_argument("--text-run", type=Path, required=True)
    docs.add_argument("--caption-run", type=Path, required=True)
    docs.add_argument("--sample", default="twitter2017_samples:test:1")
    docs.add_argument("--entity", type=int, default=2)
    docs.add_argument("--report-dir", type=Path, default=ROOT / "runs" / "screenshots")
    args = parser.parse_args()

    if args.what == "page":
        page_shot(args.run_dir, args.sample, args.entity, args.output)
    elif args.what == "report":
        report_shot(args.page, args.output, args.open, args.section)
    else:
        docs_shots(args.text_run, args.caption_run, args.sample, args.entity, args.report_dir)


if __name__ == "__main__":
    main()

"""Screenshot of the web page tagging a sample post with a trained run (docs/screenshots/web-page.png).

    python benchmarks/web_screenshot.py runs/caption-minilm-t17-e2 [--sample twitter2017_samples:test:1] [--entity 2]

Serves RUN_DIR with `mmner serve` on a free loopback port, opens the page in Debian's headless
Chromium (/usr/bin/chromium + chromedriver, through Selenium), pastes the sample post's text, its
caption and its image, tags it, with `--entity N` clicks the N-th entity found (its own region
attention, for models that return attention) and saves the screenshot.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--sample", default="twitter2017_samples:test:1")
    parser.add_argument("--entity", type=int, default=None, help="click the N-th entity (1-based) before the shot")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "screenshots" / "web-page.png")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    post = sample_post(args.sample)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mmner", "serve", str(args.run_dir), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                break
            except Exception:  # noqa: BLE001 - the server is still loading the model
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("mmner serve did not come up")
                time.sleep(1)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "model").text.strip() != "")
        driver.execute_script("arguments[0].value = arguments[1];", driver.find_element(By.ID, "text"), post["text"])
        driver.find_element(By.ID, "caption").send_keys(post["caption"])
        driver.find_element(By.ID, "image").send_keys(str(Path(post["image"]).resolve()))
        wait.until(lambda d: d.find_element(By.ID, "preview").get_attribute("naturalWidth") not in (None, "0"))
        driver.find_element(By.ID, "tag").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("tagged", "error"))
        error = driver.find_element(By.ID, "error").text
        if error:
            raise SystemExit(f"the page reported: {error}")
        if args.entity is not None:
            marks = driver.find_elements(By.CSS_SELECTOR, "#tagged mark.ent")
            if not 1 <= args.entity <= len(marks):
                raise SystemExit(f"--entity {args.entity}: the model found {len(marks)} entities")
            marks[args.entity - 1].click()
        driver.execute_script("window.scrollTo(0, 0);")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.output))
        print(f"wrote {args.output}")
    finally:
        driver.quit()
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()

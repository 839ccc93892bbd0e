"""The web page, driven in headless Chromium (Debian's chromium + chromium-driver, through Selenium).

Tags a sample post with one of the sample images, checks that the highlighted spans are the
entities the API returns for the same post (type and characters), and saves a screenshot to
a temporary folder (docs/screenshots/web-page.png is made with a trained model by
benchmarks/web_screenshot.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SHARED_DATA
from serving_helpers import live_server, tiny_run_dir

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SAMPLE = SHARED_DATA / "images" / "twitter2017_samples" / "test"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file() or not CHROMEDRIVER.is_file(),
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
]

TEXT = "RT @Messi :  visit Paris today 🙌 with @NASA  #Olympics https://t.co/x1"
CAPTION = "a basketball player dunking"


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def sample_image(tmp_path_factory) -> Path:
    found = sorted(SAMPLE.glob("*.jpg")) if SAMPLE.is_dir() else []
    if found:
        return found[0]
    from PIL import Image  # without ../shared: a stand-in image, so the page is still exercised

    path = tmp_path_factory.mktemp("img") / "sample.jpg"
    Image.new("RGB", (320, 240), (70, 130, 180)).save(path)
    return path


def test_page_tags_a_post_with_an_image(browser, sample_image, tmp_path_factory, tiny_encoder, tiny_corpus):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mmner import Tagger
    from mmner.serve import create_app

    tagger = Tagger.load(tiny_run_dir(tmp_path_factory, tiny_encoder, tiny_corpus), device="cpu")
    with live_server(create_app(tagger)) as base:
        expected = httpx.post(base + "/v1/tag/upload", data={"text": TEXT, "caption": CAPTION},
                              files={"image": (sample_image.name, sample_image.read_bytes(), "image/jpeg")}).json()
        assert expected["entities"], "the tiny model should find the names of its training templates"

        browser.get(base + "/")
        wait = WebDriverWait(browser, 20)
        wait.until(lambda d: "bert-crf" in d.find_element(By.ID, "model").text)
        legend = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#legend span")]
        assert legend == ["LOC", "ORG", "OTHER", "PER"]

        # ChromeDriver types only BMP characters, so the emoji text is set by script, as a paste would
        box = browser.find_element(By.ID, "text")
        browser.execute_script("arguments[0].value = arguments[1];", box, TEXT)
        browser.find_element(By.ID, "caption").send_keys(CAPTION)
        browser.find_element(By.ID, "image").send_keys(str(sample_image.resolve()))
        wait.until(lambda d: d.find_element(By.ID, "preview").get_attribute("naturalWidth") not in (None, "0"))
        browser.find_element(By.ID, "tag").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("tagged", "error"))
        assert browser.find_element(By.ID, "error").text == ""

        marks = browser.execute_script(
            "return [...document.querySelectorAll('#tagged mark.ent')]"
            ".map(m => [m.dataset.type, m.firstChild.textContent]);"
        )
        assert marks == [[e["type"], e["text"]] for e in expected["entities"]]
        shown = browser.execute_script(
            "const c = document.getElementById('tagged').cloneNode(true);"
            "c.querySelectorAll('.type').forEach(t => t.remove()); return c.textContent;"
        )
        assert shown == TEXT  # the post as typed: spacing, emoji, mentions and URL untouched
        rows = browser.find_elements(By.CSS_SELECTOR, "#entities tbody tr")
        assert len(rows) == len(expected["entities"])
        assert not browser.find_element(By.ID, "relation").is_displayed()  # bert-crf has no relation score

        # the heat map hook: a response with region attention is drawn over the image
        painted = browser.execute_script(
            "drawAttention({weights: Array.from({length: 49}, (_, i) => i), grid: [7, 7]});"
            "const c = document.getElementById('heat'); const px = c.getContext('2d')"
            ".getImageData(c.width - 2, c.height - 2, 1, 1).data; return [c.width, px[3]];"
        )
        assert painted[0] > 0 and painted[1] > 0
        browser.execute_script("drawAttention(null);")

        # a response with caption attention: bars per caption token; a click on an entity shows its own
        browser.execute_script(
            "render({text: 'Obama in Paris', tokens: ['Obama', 'in', 'Paris'], tags: ['B-PER', 'O', 'B-LOC'],"
            " entities: [{text: 'Obama', type: 'PER', start: 0, end: 1, char_start: 0, char_end: 5, attention: [0.9, 0.1]},"
            "            {text: 'Paris', type: 'LOC', start: 2, end: 3, char_start: 9, char_end: 14, attention: [0.2, 0.7]}],"
            " attention: {weights: [1.3, 0.9], labels: ['a', 'man']}});"
        )
        bars = lambda: [d.text for d in browser.find_elements(By.CSS_SELECTOR, "#attention-list div")]  # noqa: E731
        title = browser.find_element(By.ID, "attention-title")
        assert bars() == ["a 1.300", "man 0.900"] and "whole post" in title.text
        browser.find_elements(By.CSS_SELECTOR, "#tagged mark.ent")[1].click()
        assert bars() == ["a 0.200", "man 0.700"] and "Paris" in title.text
        browser.find_elements(By.CSS_SELECTOR, "#tagged mark.ent")[1].click()
        assert bars() == ["a 1.300", "man 0.900"] and "whole post" in title.text
        browser.execute_script("render({text: '', tokens: [], tags: [], entities: []});")
        assert not title.is_displayed()

        browser.execute_script("window.scrollTo(0, 0);")
        shot = tmp_path_factory.mktemp("shot") / "web-page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

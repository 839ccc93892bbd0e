"""The web page, driven in headless Chromium (Debian's chromium + chromium-driver, through Selenium).

Two tiny trained runs are served: a text-only bert-crf (no image or caption inputs on the page) and a
bert-crf-caption (caption and image inputs, caption attention as bars). The tests tag sample posts and
check that the highlighted spans are the entities the API returns for the same post, the attention bars
(caption words beside the bars, a scale), the character counter, that an unreadable image is refused
when chosen, and that errors are sentences rather than status codes. Screenshots go to a temporary
folder (docs/screenshots/ is made with trained models by benchmarks/web_screenshot.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from serving_helpers import live_server, tiny_caption_run_dir, tiny_run_dir

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


@pytest.fixture(scope="module")
def text_server(tmp_path_factory, tiny_encoder, tiny_corpus):
    from mmner import Tagger
    from mmner.serve import create_app

    tagger = Tagger.load(tiny_run_dir(tmp_path_factory, tiny_encoder, tiny_corpus), device="cpu")
    with live_server(create_app(tagger)) as base:
        yield base


@pytest.fixture(scope="module")
def caption_server(tmp_path_factory, tiny_model_params, tiny_corpus, tiny_visual):
    from mmner import Tagger
    from mmner.serve import create_app

    tagger = Tagger.load(tiny_caption_run_dir(tmp_path_factory, tiny_model_params, tiny_corpus, tiny_visual), device="cpu")
    with live_server(create_app(tagger)) as base:
        yield base


def open_page(browser, base: str, model: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(base + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-model") == "loaded")
    assert model in browser.find_element(By.ID, "model").text
    return wait


def tag_and_wait(browser, wait) -> None:
    from selenium.webdriver.common.by import By

    browser.execute_script("document.body.dataset.state = '';")
    browser.find_element(By.ID, "tag").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("tagged", "error"))


def bars(browser) -> list[list[str]]:
    """The caption attention as shown: [word, value] per bar row."""
    return browser.execute_script(
        "const words = [...document.querySelectorAll('#attention-list .word')].map(w => w.textContent);"
        "const values = [...document.querySelectorAll('#attention-list .value')].map(v => v.textContent);"
        "return words.map((w, i) => [w, values[i]]);"
    )


def marks(browser) -> list[list[str]]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#tagged mark.ent')].map(m => [m.dataset.type, m.firstChild.textContent]);"
    )


def test_text_only_model_page(browser, text_server, tmp_path_factory):
    """A text-only model: no image or caption inputs, a note saying why, and the post tagged as the API tags it."""
    import httpx
    from selenium.webdriver.common.by import By

    expected = httpx.post(text_server + "/v1/tag", json={"text": TEXT}).json()
    assert expected["entities"], "the tiny model should find the names of its training templates"

    wait = open_page(browser, text_server, "bert-crf")
    assert "text only" in browser.find_element(By.ID, "model").text
    legend = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#legend span")]
    assert legend == ["LOC", "ORG", "OTHER", "PER"]
    for hidden in ("caption-field", "image-field", "caption", "image", "drop", "clear-image", "attention-note"):
        assert not browser.find_element(By.ID, hidden).is_displayed(), hidden
    note = browser.find_element(By.ID, "inputs-note")
    assert note.is_displayed() and "reads the text only" in note.text and "captions" in note.text

    # ChromeDriver types only BMP characters, so the emoji text is set by script, as a paste would
    box = browser.find_element(By.ID, "text")
    browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));", box, TEXT)
    assert browser.find_element(By.ID, "text-count").text == f"{len(TEXT)} / 2000 characters"  # code points, as the service
    tag_and_wait(browser, wait)
    assert browser.find_element(By.ID, "error").text == ""
    assert marks(browser) == [[e["type"], e["text"]] for e in expected["entities"]]
    shown = browser.execute_script(
        "const c = document.getElementById('tagged').cloneNode(true);"
        "c.querySelectorAll('.type').forEach(t => t.remove()); return c.textContent;"
    )
    assert shown == TEXT  # the post as typed: spacing, emoji, mentions and URL untouched
    assert len(browser.find_elements(By.CSS_SELECTOR, "#entities tbody tr")) == len(expected["entities"])
    assert not browser.find_element(By.ID, "relation").is_displayed()  # bert-crf has no relation score
    assert browser.find_element(By.ID, "visual-read").text == ""  # nothing to say about images for a text model

    browser.execute_script("window.scrollTo(0, 0);")
    shot = tmp_path_factory.mktemp("shot") / "web-page-text.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_an_int8_model_says_so(browser, tmp_path_factory, tiny_encoder, tiny_corpus):
    """`mmner serve --int8`: the page names the int8 encoder and that the run's F1 was measured in fp32."""
    from selenium.webdriver.common.by import By

    from mmner import Tagger
    from mmner.serve import create_app

    tagger = Tagger.load(tiny_run_dir(tmp_path_factory, tiny_encoder, tiny_corpus), device="cpu", int8=True)
    with live_server(create_app(tagger)) as base:
        open_page(browser, base, "bert-crf")
        line = browser.find_element(By.ID, "model").text
    assert re.match(r"bert-crf \(.+, int8\), text only, test F1 [0-9.]+ \(in fp32\)$", line), line


def test_caption_model_page(browser, caption_server, sample_image, tmp_path_factory):
    """A caption model: caption and image inputs; its caption attention as one bar per caption word, the
    word beside its bar, and a scale under the bars."""
    import httpx
    from selenium.webdriver.common.by import By

    from mmner.analysis.report import caption_words

    expected = httpx.post(caption_server + "/v1/tag/upload?attention=true", data={"text": TEXT, "caption": CAPTION},
                          files={"image": (sample_image.name, sample_image.read_bytes(), "image/jpeg")}).json()
    labels = expected["attention"]["labels"]
    assert any(label.startswith("##") for label in labels)  # the tiny WordPiece vocabulary splits the caption
    words, weights = caption_words(labels, expected["attention"]["weights"])
    # the caption as words (cut at the model's caption_tokens), its pieces joined
    assert 1 < len(words) < len(labels) and " ".join(words) == CAPTION[:len(" ".join(words))]

    wait = open_page(browser, caption_server, "bert-crf-caption")
    for shown in ("caption", "drop", "clear-image", "attention-note"):
        assert browser.find_element(By.ID, shown).is_displayed(), shown
    assert "caption" in browser.find_element(By.ID, "inputs-note").text

    browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
                           browser.find_element(By.ID, "text"), TEXT)
    browser.find_element(By.ID, "caption").send_keys(CAPTION)
    browser.find_element(By.ID, "image").send_keys(str(sample_image.resolve()))
    wait.until(lambda d: d.find_element(By.ID, "preview").get_attribute("naturalWidth") not in (None, "0"))
    tag_and_wait(browser, wait)
    assert browser.find_element(By.ID, "error").text == ""
    assert marks(browser) == [[e["type"], e["text"]] for e in expected["entities"]]
    assert f"“{CAPTION}”" in browser.find_element(By.ID, "visual-read").text

    assert bars(browser) == [[w, f"{x:.3f}"] for w, x in zip(words, weights)]  # words, not "##" pieces
    geometry = browser.execute_script(
        "const box = (q) => document.querySelector(q).getBoundingClientRect();"
        "const w = box('#attention-list .word'), t = box('#attention-list .track'), a = box('#attention-list .axis');"
        "return [w.right <= t.left, Math.abs(w.top - t.top) < 8, a.top > t.bottom,"
        " [...document.querySelectorAll('#attention-list .axis span')].map(s => s.textContent)];"
    )
    beside, same_row, below, ticks = geometry
    assert beside and same_row and below  # the word left of its bar, on its row; the scale under the bars
    assert ticks[0] == "0" and len(ticks) == 3 and float(ticks[-1]) >= max(weights)

    browser.execute_script("window.scrollTo(0, 0);")
    shot = tmp_path_factory.mktemp("shot") / "web-page-caption.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_unreadable_image_is_refused(browser, caption_server, sample_image, tmp_path):
    """A file that is not a readable picture is refused when chosen, with the reason: never a broken icon."""
    from selenium.webdriver.common.by import By

    wait = open_page(browser, caption_server, "bert-crf-caption")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
    browser.find_element(By.ID, "image").send_keys(str(broken))
    wait.until(lambda d: d.find_element(By.ID, "error").text != "")
    assert "“broken.jpg” cannot be read as an image" in browser.find_element(By.ID, "error").text
    assert not browser.find_element(By.ID, "figure").is_displayed()
    assert browser.find_element(By.ID, "preview").get_attribute("src") in (None, "")
    assert browser.execute_script("return imageFile;") is None  # not sent with the next tag

    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    browser.execute_script("setImage(new File(['hello'], 'notes.txt', {type: 'text/plain'}));")
    assert "“notes.txt” is not an image (text/plain)" in browser.find_element(By.ID, "error").text

    browser.find_element(By.ID, "image").send_keys(str(sample_image.resolve()))  # a good one is taken again
    wait.until(lambda d: d.find_element(By.ID, "figure").is_displayed())
    assert browser.find_element(By.ID, "error").text == ""


def test_character_counter_and_errors_in_words(browser, text_server):
    from selenium.webdriver.common.by import By

    wait = open_page(browser, text_server, "bert-crf")
    box, counter = browser.find_element(By.ID, "text"), browser.find_element(By.ID, "text-count")
    box.send_keys("hello")
    assert counter.text == "5 / 2000 characters" and "over" not in counter.get_attribute("class")
    set_text = "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));"
    browser.execute_script(set_text, box, "ab🙌")
    assert counter.text == "3 / 2000 characters"  # an emoji is one character, as the service counts
    browser.execute_script(set_text, box, "x" * 2003)
    assert counter.text == "2003 / 2000 characters: 3 over the limit" and "over" in counter.get_attribute("class")
    browser.find_element(By.ID, "tag").click()
    error = browser.find_element(By.ID, "error").text
    assert "2003 characters long" in error and "at most 2000" in error

    # the service's refusals as sentences, never "415: ..."
    browser.execute_script(set_text, box, "Obama in Paris")
    cases = [
        (415, {"error": "image 'a.jpg': unreadable image (cannot identify image file)"},
         "The image could not be read: image 'a.jpg': unreadable image (cannot identify image file)."),
        (413, {"error": "request body too large (12.0 MiB): the limit is 10.0 MiB"},
         "Too large for the service: request body too large (12.0 MiB): the limit is 10.0 MiB."),
        (422, {"error": "text: empty text"}, "The post could not be tagged: text: empty text."),
        (502, None, "The service refused the post (HTTP status 502)."),
    ]
    for status, body, message in cases:
        browser.execute_script(
            "const [status, body] = arguments;"
            "window.fetch = async () => new Response(body === null ? 'Bad Gateway' : JSON.stringify(body),"
            " {status, headers: {'Content-Type': body === null ? 'text/plain' : 'application/json'}});",
            status, body)
        tag_and_wait(browser, wait)
        error = browser.find_element(By.ID, "error").text
        assert error == message and not re.match(r"^\s*\d{3}\b", error)
    browser.execute_script("window.fetch = async () => { throw new TypeError('Failed to fetch'); };")
    tag_and_wait(browser, wait)
    assert browser.find_element(By.ID, "error").text == "The service cannot be reached: is mmner serve still running?"


def test_attention_drawing(browser, text_server):
    """The drawing hooks on their own: a heat map with its colour legend over an image; caption bars with
    word pieces joined; a click on an entity shows its own attention."""
    from selenium.webdriver.common.by import By

    open_page(browser, text_server, "bert-crf")
    browser.execute_script(  # an image drawn as a user would have chosen it (the text model hides the field)
        "document.getElementById('image-field').hidden = false;"
        "const c = document.createElement('canvas'); c.width = 70; c.height = 70;"
        "c.getContext('2d').fillRect(0, 0, 70, 70);"
        "c.toBlob((b) => setImage(new File([b], 'square.png', {type: 'image/png'})));"
    )
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "figure").is_displayed() and d.execute_script(
        "const i = document.getElementById('preview'); return i.complete && i.naturalWidth > 0;"))
    painted = browser.execute_script(
        "drawAttention({weights: Array.from({length: 49}, (_, i) => i), grid: [7, 7]});"
        "const c = document.getElementById('heat'); const px = c.getContext('2d')"
        ".getImageData(c.width - 2, c.height - 2, 1, 1).data; return [c.width, px[3]];"
    )
    assert painted[0] > 0 and painted[1] > 0
    legend = browser.find_element(By.ID, "heat-legend")
    assert legend.is_displayed() and "high (48)" in legend.text and "low" in legend.text
    browser.execute_script("drawAttention(null);")
    assert not legend.is_displayed()

    browser.execute_script(
        "render({text: 'Obama in Paris', tokens: ['Obama', 'in', 'Paris'], tags: ['B-PER', 'O', 'B-LOC'],"
        " entities: [{text: 'Obama', type: 'PER', start: 0, end: 1, char_start: 0, char_end: 5,"
        "             attention: [0.5, 0.1, 0.05, 0.05]},"
        "            {text: 'Paris', type: 'LOC', start: 2, end: 3, char_start: 9, char_end: 14,"
        "             attention: [0.1, 0.2, 0.2, 0.3]}],"
        " attention: {weights: [0.3, 0.1, 0.02, 0.08], labels: ['a', 'bas', '##ket', '##ball']}});"
    )
    title = browser.find_element(By.ID, "attention-title")
    assert bars(browser) == [["a", "0.300"], ["basketball", "0.200"]] and "whole post" in title.text
    ticks = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#attention-list .axis span")]
    assert ticks == ["0", "0.15", "0.3"]  # the scale ends at the largest weight rounded up (0.3)
    widths = browser.execute_script(
        "return [...document.querySelectorAll('#attention-list .fill')].map(f => parseFloat(f.style.width));")
    assert widths == pytest.approx([100.0, 100 * 0.2 / 0.3], abs=0.01)
    browser.find_elements(By.CSS_SELECTOR, "#tagged mark.ent")[1].click()
    assert bars(browser) == [["a", "0.100"], ["basketball", "0.700"]] and "Paris" in title.text
    browser.find_elements(By.CSS_SELECTOR, "#tagged mark.ent")[1].click()
    assert bars(browser) == [["a", "0.300"], ["basketball", "0.200"]] and "whole post" in title.text
    browser.execute_script("render({text: '', tokens: [], tags: [], entities: []});")
    assert not title.is_displayed()

"""The search page at `/` in a real headless Chromium (issue 14.7): key prompt, text query,
label filter, image upload, "more like this". Needs Debian's `chromium` and
`chromium-driver` (apt); the driver is named explicitly so selenium downloads nothing.
Screenshots go to bench/results/search_page*.png."""
import shutil
from pathlib import Path

import pytest

from flows.api import create_app
from test_api import running
from test_query import clip_project  # noqa: F401 - the shared 60-item tiny-CLIP project

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
RESULTS = Path(__file__).parents[2] / "bench" / "results"
KEY = "page-key"
WAIT_S = 60


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    assert not missing, f"{missing} missing: apt-get install -y chromium chromium-driver"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(clip_project, browser):  # noqa: F811
    """The page of a server that asks for an API key, opened and unlocked with it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running(create_app(clip_project[1], api_key=KEY)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: d.find_element(By.ID, "key-form").is_displayed())  # the API answered 401
        browser.find_element(By.ID, "key").send_keys(KEY)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Ready"))
        yield browser, wait, clip_project


def _cards(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#results .card')].map(c => {
          const img = c.querySelector('img.thumb');
          return {id: c.dataset.id, text: (c.querySelector('.text') || {}).textContent || '',
                  distance: c.querySelector('.distance').textContent,
                  chips: [...c.querySelectorAll('.chip')].map(x => x.textContent),
                  image: img ? {complete: img.complete, width: img.naturalWidth, src: img.src} : null};
        });""")


def _images_loaded(driver) -> bool:
    cards = _cards(driver)
    return bool(cards) and all(c["image"] and c["image"]["complete"] and c["image"]["width"] > 0 for c in cards)


def _search(page, text: str):
    from selenium.webdriver.common.by import By

    driver, wait, _ = page
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(f"“{text}”: "))
    wait.until(_images_loaded)
    return _cards(driver)


def test_search_page_builds_table_choice_and_label_filters_from_the_api(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, _, _ = page
    assert Select(driver.find_element(By.ID, "table")).first_selected_option.text == "fused__clip"
    colors = [o.text for o in Select(driver.find_element(By.ID, "filter-color")).options]
    assert colors == ["(any)", "blue (30)", "red (30)"]
    assert driver.find_element(By.CSS_SELECTOR, ".filter[data-label=topic] select") is not None


def test_search_page_text_query_renders_cards_with_images_text_labels_and_distance(page):
    driver, _, project = page
    cards = _search(page, "a red square")
    assert len(cards) == 24  # k = 24 of 60 items
    assert all(c["id"].startswith("item-") and c["image"]["src"].startswith("blob:") for c in cards)
    assert all(c["image"]["width"] == 48 for c in cards)  # the 48 px PNGs, served by /items/{id}/image
    texts = {r["id"]: r["text"] for r in project[1].read("items", ["id", "text"]).to_pylist()}
    assert all(c["text"] == texts[c["id"]] for c in cards)
    assert all(any(ch.startswith("color: ") for ch in c["chips"]) and any(ch.startswith("topic: ") for ch in c["chips"])
               for c in cards)
    distances = [float(c["distance"].split()[1]) for c in cards]
    assert distances == sorted(distances) and all(0 <= d <= 2 for d in distances)
    RESULTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(RESULTS / "search_page.png"))
    assert (RESULTS / "search_page.png").stat().st_size > 10_000


def test_search_page_label_filter_narrows_the_results(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, _, _ = page
    Select(driver.find_element(By.ID, "filter-color")).select_by_value("red")
    try:
        cards = _search(page, "a vehicle")
        assert len(cards) == 24 and all("color: red" in c["chips"] for c in cards)
    finally:
        Select(driver.find_element(By.ID, "filter-color")).select_by_value("")


def test_search_page_more_like_this_queries_by_the_items_id(page):
    from selenium.webdriver.common.by import By

    driver, wait, _ = page
    first = _search(page, "a dog")[0]["id"]
    driver.find_element(By.CSS_SELECTOR, f'.card[data-id="{first}"] .more').click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(f"More like {first}: 24 results"))
    wait.until(_images_loaded)
    ids = [c["id"] for c in _cards(driver)]
    assert len(ids) == 24 and first not in ids  # a query by id leaves the item out
    driver.save_screenshot(str(RESULTS / "search_page_more_like_this.png"))


def test_search_page_image_upload_finds_the_uploaded_item(page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, wait, project = page
    image = tmp_path / "query.png"
    shutil.copy(project[3] / "img" / "item-0007.png", image)
    tables = Select(driver.find_element(By.ID, "table"))
    classic = next(o.get_attribute("value") for o in tables.options if o.text.startswith("emb__image__classic"))
    tables.select_by_value(classic)
    try:
        driver.find_element(By.ID, "image").send_keys(str(image))
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Image query.png: 24 results"))
        wait.until(_images_loaded)
        cards = _cards(driver)
        assert cards[0]["id"] == "item-0007" and float(cards[0]["distance"].split()[1]) == 0.0
    finally:
        driver.find_element(By.ID, "clear-image").click()
        tables.select_by_value("fused__clip")


def test_search_page_shows_api_errors_and_breaks_no_content_security_policy(page):
    from selenium.webdriver.common.by import By

    driver, wait, _ = page
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys("x" * 2001)
    driver.find_element(By.ID, "go").click()
    wait.until(lambda d: "over the limit of 2,000" in d.find_element(By.ID, "status").text)
    assert driver.find_element(By.ID, "status").get_attribute("class") == "error"
    refused = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]
               or "Refused to" in e["message"]]
    assert refused == []

"""Steering by example in a real browser: each result's toggles, by mouse and by keyboard, "Start over", marks with
filters, a shared link that carries them, "Why this match?", the results' accessible names, and axe-core (npm,
pinned in tests/js) on the page after a search and after a refinement. The Live tab's side is in test_camera."""

from pathlib import Path

import pytest

from browser_page import browser, open_page  # noqa: F401 (fixtures)
from browser_page import CHROMIUM, WAIT, choose, name_of, results, upload, wait_for_status
from conftest import ROOT

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium: apt-get install -y chromium")
AXE = ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
def query_photo(tmp_path, catalog_rows):
    path = tmp_path / "cap.jpg"
    catalog_rows[30]["image"].save(path, quality=92)
    return path


def shown_names(page) -> list[str]:
    """The results' accessible names, in order: "<caption on one line>, result i of k"."""
    return [results(page).nth(i).get_attribute("aria-label") for i in range(results(page).count())]


def toggles_ready(page, count: int):
    page.wait_for_function("n => document.querySelectorAll('#results .steer-toggles').length === n", arg=count,
                           timeout=WAIT)


def serious_violations(page) -> list[dict]:
    """axe-core's serious and critical violations on the page as it is (WCAG 2 A and AA rules, best practices)."""
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document)).violations.map(v => ({id: v.id, impact: v.impact, "
                          "nodes: v.nodes.map(n => n.target.join(' '))}))")
    return [v for v in found if v["impact"] in ("serious", "critical")]


def test_marking_results_steers_them_by_mouse_and_keyboard_and_start_over_returns(open_page, catalog_rows,
                                                                                  query_photo):
    page = open_page()
    upload(page, query_photo)
    wait_for_status(page, "8 results from")
    toggles_ready(page, 8)
    plain = shown_names(page)
    # each result is named by its product and its rank, not "Thumbnail 1 of 8"
    assert plain[0].startswith(catalog_rows[30]["productDisplayName"]) and plain[0].endswith(", result 1 of 8")
    assert all(name.endswith(f", result {i} of 8") for i, name in enumerate(plain, 1))
    assert page.get_by_role("button", name=plain[2], exact=True).count() == 1
    assert serious_violations(page) == []  # after a search

    liked = name_of(results(page).nth(5))
    like = page.get_by_role("button", name=f"More like this: {liked}", exact=True)
    like.click()
    wait_for_status(page, "Steered by your marks (1 liked)")
    assert page.get_by_role("button", name=f"More like this: {liked}", exact=True).get_attribute(
        "aria-pressed") == "true"  # the liked product is still shown (it looks like itself), marked
    # the keyboard: Tab from the first result's name reaches its "More like", then its "Not like"; Space presses it
    first, unliked = shown_names(page)[0], name_of(results(page).nth(0))
    page.get_by_role("button", name=first, exact=True).focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == f"Not like this: {unliked}"
    page.keyboard.press("Space")
    status = wait_for_status(page, "Steered by your marks (1 liked and 1 not liked)")
    assert "8 results from" in status
    steered = shown_names(page)
    assert steered != plain and not any(name.startswith(unliked + " ") for name in steered)  # unliked: gone
    bar = page.locator("#steer").inner_text()
    assert f"More like: {liked}" in bar and f"Not like: {unliked}" in bar  # every mark visible, also the gone one
    assert serious_violations(page) == []  # after a refinement
    page.screenshot(path=str(ROOT / "docs" / "screenshot-steering.png"))

    page.get_by_role("button", name=f"Remove the mark on {unliked}").click()  # one mark off: steered by the other
    wait_for_status(page, "Steered by your marks (1 liked):")
    page.get_by_role("button", name="Start over: remove every mark").click()
    page.wait_for_function("() => !document.querySelector('#status').innerText.includes('Steered')", timeout=WAIT)
    toggles_ready(page, 8)
    assert shown_names(page) == plain  # the photo's own results, as before any mark
    assert page.locator("#results [aria-pressed=true]").count() == 0


def test_marks_stay_with_filters_and_a_shared_link_opens_the_same_steered_search(open_page, browser, app,
                                                                                 catalog_rows):
    product = catalog_rows[12]
    page = open_page(f"?item={product['id']}")
    wait_for_status(page, f"More like **{product['productDisplayName']}**".replace("**", ""))
    toggles_ready(page, 8)
    names = shown_names(page)
    unliked = name_of(results(page).nth(0))
    page.locator("#results .steer-unlike").nth(0).click()
    wait_for_status(page, "Steered by your marks (1 not liked)")
    toggles_ready(page, 8)
    liked = name_of(results(page).nth(3))
    page.get_by_role("button", name=f"More like this: {liked}", exact=True).click()
    wait_for_status(page, "(1 liked and 1 not liked)")
    women = "Women"
    choose(page, "gender", women)
    status = wait_for_status(page, "gender = Women")
    assert "Steered by your marks (1 liked and 1 not liked)" in status  # the filter kept the marks
    steered = shown_names(page)
    assert steered and steered != names and all(f" {women} · " in name for name in steered)

    link = page.get_by_role("link", name="Share this steered search")
    href = link.get_attribute("href")
    assert href.startswith(f"?item={product['id']}&like=") and "&unlike=" in href
    other = open_page(href)  # another visitor opens the link: same marks, same results (before any filter)
    wait_for_status(other, "Steered by your marks (1 liked and 1 not liked)")
    choose(other, "gender", women)
    wait_for_status(other, "gender = Women")
    toggles_ready(other, len(steered))
    assert shown_names(other) == steered
    bar = other.locator("#steer").inner_text()
    assert f"More like: {liked}" in bar and f"Not like: {unliked}" in bar  # the marks came with the link


def test_why_this_match_on_steered_results_says_what_it_explains(open_page, query_photo):
    page = open_page()
    upload(page, query_photo)
    wait_for_status(page, "8 results from")
    toggles_ready(page, 8)
    page.locator("#results .steer-like").nth(2).click()
    wait_for_status(page, "Steered by your marks (1 liked)")
    page.locator("#why input").check()
    results(page).nth(1).click()
    page.wait_for_function("() => (document.querySelector('#why-text')?.innerText || '').includes('matched')",
                           timeout=WAIT)
    said = page.locator("#why-text").inner_text()
    assert "steered by your marks (1 liked)" in said and "likeness to your query itself" in said
    assert "Steered by your marks" in page.locator("#status").inner_text()  # the click explained, searched nothing

from __future__ import annotations

from playwright.sync_api import Browser, ConsoleMessage, Page

from tests.e2e.conftest import ARTIFACTS, RunningBastion

# Runs before any page script; CDP-injected, so the page's CSP does not apply to it.
COLLECT_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def watched_page(browser: Browser) -> tuple[Page, list[str]]:
    context = browser.new_context()
    context.add_init_script(COLLECT_VIOLATIONS)
    page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def assert_no_csp_violation(page: Page) -> None:
    assert page.evaluate("window.__violations") == []


def test_sign_in_through_the_form_see_the_console_sign_out_and_the_old_cookie_is_dead(
    bastion: RunningBastion, browser: Browser
) -> None:
    page, errors = watched_page(browser)
    page.goto(bastion.url + "/")
    assert page.url.endswith("/login?next=/")
    assert page.locator("#captcha-image").evaluate("img => img.naturalWidth") == 200
    assert_no_csp_violation(page)

    # A new picture first: exercises the refresh (and its token renewal) in the browser.
    before = page.locator("#captcha-nonce").input_value()
    page.click("#captcha-refresh")
    page.wait_for_function(
        "before => document.getElementById('captcha-nonce').value !== before", arg=before
    )

    page.fill("#username", "admin")
    page.fill("#password", bastion.admin_password)
    page.fill("#captcha", bastion.last_captcha_answer())
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "login.png"))
    page.click("button[type=submit]")
    page.wait_for_url(bastion.url + "/")
    assert "Signed in as admin" in page.content()
    assert_no_csp_violation(page)
    page.screenshot(path=str(ARTIFACTS / "overview.png"))

    cookies = page.context.cookies()
    session_cookie = next(c for c in cookies if c["name"] == "bastion_session")
    assert session_cookie["httpOnly"] is True
    assert session_cookie["sameSite"] == "Lax"

    page.click("text=Sign out")
    page.wait_for_load_state()
    assert page.url == bastion.url + "/login", (page.url, page.content()[:500])
    assert_no_csp_violation(page)

    # The copied cookie, replayed from a fresh browser, no longer opens the console.
    thief = browser.new_context()
    thief.add_cookies([{**session_cookie}])  # type: ignore[list-item]
    stolen = thief.new_page()
    stolen.goto(bastion.url + "/")
    assert "/login" in stolen.url
    thief.close()

    assert errors == []
    assert "CSP violation" not in bastion.log_text()


def test_a_wrong_captcha_shows_the_generic_message(
    bastion: RunningBastion, browser: Browser
) -> None:
    page, errors = watched_page(browser)
    page.goto(bastion.url + "/login")
    page.fill("#username", "admin")
    page.fill("#password", bastion.admin_password)
    page.fill("#captcha", "WRONG")
    with page.expect_response(
        lambda r: r.url.endswith("/login") and r.request.method == "POST"
    ) as posted:
        page.click("button[type=submit]")
    assert posted.value.status == 401
    message = page.locator(".message").inner_text()
    assert message.startswith("Sign-in failed")
    assert "captcha" not in message.lower()
    assert_no_csp_violation(page)
    # Chromium logs every 4xx document as a console error; that one is the expected 401.
    assert [e for e in errors if "status of 401" not in e] == []

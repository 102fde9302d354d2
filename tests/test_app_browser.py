"""The Gradio app: its engine (models, reading, limits, masks, files) and, in a real browser,
upload, restore, download, switch a codebook off.

The browser test starts ``python -m adacode_jax.cli.app`` on a free localhost port in a subprocess (its own empty
working and home folders, which must stay empty), drives headless Chromium with Selenium,
uploads a 48×48 16-bit PNG cut from an embedded image, waits for the result, downloads it
and compares it with what ``adacode-restore`` writes for the same file and model (equal, and
16-bit), then unticks codebook w0 and checks that the picture and the download change.
Screenshots of each step go to the test's folder (``docs/app_restore.png`` and
``docs/app_explorer.png`` are copies of steps 2 and 3).

The browser test needs Gradio and Selenium in the venv and Debian's ``chromium`` and
``chromium-driver``, and is skipped (with the reason) without them; the engine tests need none.
"""
import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from adacode_jax.app import webapp as app
from adacode_jax.models import checkpointing
from adacode_jax import errors, images as imageio, models
from adacode_jax.inference import restorer as restore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SIDE = 48           # LR side of the uploaded image: one small program to compile

_missing = [what for what, ok in (
    ("gradio (pip install gradio==6.31.0)", importlib.util.find_spec("gradio") is not None),
    ("selenium (pip install selenium==4.51.0)", importlib.util.find_spec("selenium") is not None),
    ("chromium (apt-get install -y chromium)", os.access(CHROMIUM, os.X_OK)),
    ("chromedriver (apt-get install -y chromium-driver)", os.access(CHROMEDRIVER, os.X_OK)),
) if not ok]
# Skipped where something is missing, except under CI (CI=true), where `make test` installs
# it: there a missing browser is a failure, not a silent skip.
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true")
needs_browser = pytest.mark.skipif(bool(_missing) and not _IN_CI,
                                   reason="needs " + ", ".join(_missing))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path, name):
    home = tmp_path / f"{name}_home"
    home.mkdir()
    tmp = tmp_path / f"{name}_tmp"
    tmp.mkdir()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=ROOT,
               GRADIO_ANALYTICS_ENABLED="False", NO_PROXY="127.0.0.1,localhost")
    env.pop("XLA_FLAGS", None)            # the app runs as a user runs it: one CPU device
    env.pop("GRADIO_TEMP_DIR", None)
    env.pop("MPLCONFIGDIR", None)
    return env, home, tmp


# ---- the engine, without a browser --------------------------------------------------------

def test_parse_model_names_kinds_and_errors(tmp_path):
    shipped = os.path.join(restore.PRETRAINED_DIR, "compact_sr_x4")
    spec = app.parse_model(f"mine={shipped}")
    assert (spec.name, spec.kind, spec.path) == ("mine", "sr_x4", shipped)
    assert app.parse_model(shipped + ":sr_x4").name == "compact_sr_x4"
    with pytest.raises(errors.UserError, match="holds a sr_x4 network, not sr_x2"):
        app.parse_model(shipped + ":sr_x2")
    pth = tmp_path / "AdaCode_Inpaint.pth"
    pth.write_bytes(b"not read until used")
    with pytest.raises(errors.UserError, match="an official state dict needs its kind"):
        app.parse_model(str(pth))
    spec = app.parse_model(f"inp={pth}:inpaint")
    assert (spec.name, spec.kind) == ("inp", "inpaint")
    with pytest.raises(errors.UserError, match="does not exist"):
        app.parse_model(str(tmp_path / "missing"))
    assert [s.name for s in app.shipped_models()] == ["compact_sr_x4"]
    with pytest.raises(errors.UserError, match="used twice"):
        app.Engine([spec, spec], str(tmp_path))


def test_engine_read_errors_and_pixel_cap_name_the_uploaded_file(tmp_path):
    engine = app.Engine(app.shipped_models(), str(tmp_path / "work"), max_pixels=40 * 40)
    bad = tmp_path / "upload" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(errors.UserError) as e:
        engine.read(str(bad))
    assert str(e.value).startswith("broken.png: ") and str(tmp_path) not in str(e.value)
    big = tmp_path / "upload" / "big.png"
    imageio.write_image_raw(big, np.zeros((48, 48, 3), np.uint8))
    with pytest.raises(errors.UserError, match="big.png: .*max-pixels"):
        engine.read(str(big))
    assert app.Engine(app.shipped_models(), str(tmp_path)).read(str(big)).shape == (48, 48, 3)


@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="needs gradio")
def test_page_queues_every_network_run_in_one_group_of_one(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    demo = app.build_ui(app.Engine(app.shipped_models(), str(tmp_path)))
    runs = [f for f in demo.fns.values()
            if f.name in ("restore_now", "solo_then_restore", "on_model")]
    assert len(runs) == 4 and {f.concurrency_id for f in runs} == {"device"}
    assert demo._queue.default_concurrency_limit == 1
    assert all(f.concurrency_limit == "default" and f.queue for f in runs)


def test_mask_from_editor_takes_every_painted_pixel():
    assert app.mask_from_editor(None, (4, 4)) is None
    layer = np.zeros((8, 8, 4), np.uint8)
    assert app.mask_from_editor({"layers": [layer]}, (8, 8)) is None
    layer[2:4, 4:8, 3] = 255
    holes = app.mask_from_editor({"background": None, "layers": [layer], "composite": None}, (8, 8))
    assert holes.dtype == bool and holes.sum() == 8 and holes[2:4, 4:8].all()
    half = app.mask_from_editor({"layers": [layer]}, (4, 4))       # a preview smaller than the image
    assert half.shape == (4, 4) and half[1, 2:4].all() and half.sum() == 2


def test_engine_inpaints_a_painted_mask_like_the_library_and_writes_only_its_folder(tmp_path):
    cfg = models.tiny_model_config("inpaint")
    model = models.build(cfg)
    variables = {"params": model.init(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))["params"]}
    ckpt = checkpointing.save_inference(str(tmp_path / "inp"), cfg, variables)
    src = tmp_path / "upload" / "photo.jpg"
    img = imageio.read_image_raw(os.path.join(ROOT, "assets", "images", "coffee.png"))[:64, :64]
    imageio.write_image_raw(src, img)
    work = tmp_path / "work"
    engine = app.Engine([app.parse_model(f"inp={ckpt}")], str(work))
    assert engine.tasks() == ["inpaint"] and engine.num_codebooks("inp") == 2
    holes = np.zeros((64, 64), bool)
    holes[20:40, 10:30] = True
    result = engine.run("inp", str(src), holes=holes)
    # A mask painted on a half-size preview is scaled to the image (nearest neighbour).
    half = engine.run("inp", str(src), holes=holes[::2, ::2])
    np.testing.assert_array_equal(half.output, result.output)
    expected = restore.Restorer.from_checkpoint(ckpt, "inpaint").restore(imageio.read_image_raw(src),
                                                                          mask=holes)
    np.testing.assert_array_equal(result.output, expected)
    assert result.path.startswith(str(work) + os.sep) and result.path.endswith("photo.jpg")
    assert (result.lq[20:40, 10:30] == 255).all()             # the page shows the holes
    dropped = engine.run("inp", str(src), holes=holes, drop=(1,))
    assert dropped.kept == (0,) and dropped.path.endswith("photo_only-w0.jpg")
    assert not np.array_equal(dropped.output, result.output)
    fig, text = app.weight_panel(result)
    assert fig.dtype == np.uint8 and "| w1 |" in text


# ---- the page in a browser ------------------------------------------------------------------

@pytest.fixture
def app_server(tmp_path):
    env, home, tmp = _env(tmp_path, "app")
    cwd = tmp_path / "app_cwd"
    cwd.mkdir()
    port = _free_port()
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "adacode_jax.cli.app", "--port", str(port)],
                            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while True:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"the app exited with {proc.returncode}:\n{(tmp_path / 'app.log').read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the app did not answer within 90 s")
        time.sleep(0.5)
    yield url, dict(home=home, tmp=tmp, cwd=cwd)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    assert not os.listdir(tmp), "the app left its temporary folder behind"


@pytest.fixture
def browser(tmp_path):
    if _missing:                        # only reached under CI (needs_browser skips elsewhere)
        pytest.fail("CI=true but the browser test needs " + ", ".join(_missing)
                    + "; `make test` installs them as root on Debian")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1900", f"--user-data-dir={tmp_path / 'chrome_profile'}"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.downloads = downloads
    yield driver
    driver.quit()


def _wait(driver, condition, timeout, what):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: condition(d))
    except Exception as e:  # noqa: BLE001 - say what was awaited
        driver.save_screenshot(str(driver.downloads.parent / f"timeout_{what.replace(' ', '_')}.png"))
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from e


def _text(driver, css):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, css).text


def _download(driver, before: set) -> str:
    from selenium.webdriver.common.by import By
    driver.find_element(By.CSS_SELECTOR, "#download").click()

    def done(_):
        new = set(glob.glob(str(driver.downloads / "*"))) - before
        new = [f for f in new if not f.endswith((".crdownload", ".tmp"))]
        return new[0] if new else False
    return _wait(driver, done, 30, "the download")


@needs_browser
def test_upload_restore_download_and_drop_a_codebook(app_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, folders = app_server
    # A 16-bit RGB PNG (an embedded photo's crop, with low bits so 16-bit matters).
    crop = imageio.read_image_raw(os.path.join(ROOT, "assets", "images", "chelsea.png"))[96:96 + SIDE,
                                                                                         96:96 + SIDE]
    rng = np.random.default_rng(0)
    sixteen = crop.astype(np.uint16) * 257 + rng.integers(0, 200, crop.shape).astype(np.uint16)
    src = tmp_path / "inputs" / "cat16.png"
    imageio.write_image_raw(src, sixteen)
    assert imageio.read_image_raw(src).dtype == np.uint16

    # What the restore CLI writes for it (a subprocess, as a user runs it).
    cli_env, _, _ = _env(tmp_path, "cli")
    cli = subprocess.Popen([sys.executable, "-m", "adacode_jax.cli.restore", "-i", str(src), "-o",
                            str(tmp_path / "cli_out"), "--no-progress"],
                           env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    browser.get(url)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"), 30,
          "the page")
    # An unreadable file: the project's one-line message, naming the file, in an error toast.
    broken = tmp_path / "inputs" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(broken))
    toast = _wait(browser, lambda d: [t.text for t in d.find_elements(
        By.CSS_SELECTOR, "[data-testid=toast-body]") if "broken.png" in t.text], 30, "the error")
    assert "broken.png: " in toast[0] and str(tmp_path) not in toast[0], toast
    browser.save_screenshot(str(tmp_path / "step0_unreadable.png"))
    for close in browser.find_elements(By.CSS_SELECTOR, "[data-testid=toast-close]"):
        close.click()
    browser.find_element(By.CSS_SELECTOR, "#upload button[aria-label='Clear']").click() \
        if browser.find_elements(By.CSS_SELECTOR, "#upload button[aria-label='Clear']") else None
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"), 10,
          "the upload field again")
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(src))
    _wait(browser, lambda d: "48×48" in _text(d, "#status"), 30, "the upload")
    browser.save_screenshot(str(tmp_path / "step1_uploaded.png"))

    browser.find_element(By.CSS_SELECTOR, "#restore").click()
    _wait(browser, lambda d: "Restored" in _text(d, "#status"), 120, "the restoration")
    assert "192×192 uint16" in _text(browser, "#status")
    assert "codebooks used: w0, w1, w2" in _text(browser, "#status")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#result img"), 10, "the result picture")
    first_src = browser.find_element(By.CSS_SELECTOR, "#result img").get_attribute("src")
    browser.save_screenshot(str(tmp_path / "step2_restored.png"))
    got = _download(browser, set())
    app_out = imageio.read_image_raw(got)

    out, _ = cli.communicate(timeout=120)
    assert cli.returncode == 0, out
    cli_out = imageio.read_image_raw(tmp_path / "cli_out" / "cat16.png")
    assert app_out.dtype == cli_out.dtype == np.uint16
    assert app_out.shape == cli_out.shape == (4 * SIDE, 4 * SIDE, 3)
    np.testing.assert_array_equal(app_out, cli_out)

    # Codebook explorer: untick w0 -> the image is decoded again without it.
    browser.find_element(By.CSS_SELECTOR, "#codebooks input[name=w0]").click()
    _wait(browser, lambda d: "codebooks used: w1, w2" in _text(d, "#status"), 120,
          "the re-decoding without w0")
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#result img").get_attribute("src")
          != first_src, 10, "the new picture")
    browser.execute_script("document.querySelector('#explorer').scrollIntoView()")
    browser.save_screenshot(str(tmp_path / "step3_explorer.png"))
    dropped = imageio.read_image_raw(_download(browser, {got}))
    assert dropped.shape == app_out.shape and dropped.dtype == np.uint16
    assert np.abs(dropped.astype(np.int64) - app_out.astype(np.int64)).mean() > 100   # of 65535
    stats = _text(browser, "#weight-stats")
    assert "dominant in" in stats and all(f"w{k} " in stats for k in range(3)), stats

    # Nothing outside the app's temporary folder (under its TMPDIR).
    for name in ("home", "cwd"):
        assert not os.listdir(folders[name]), (name, os.listdir(folders[name]))
    assert [n for n in os.listdir(folders["tmp"]) if not n.startswith("adacode-app-")] == []

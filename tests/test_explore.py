"""``latentdirs explore``: the server over real HTTP, and the page end to end in a real headless chromium.

The browser test drives Debian's ``chromium`` through ``chromium-driver`` (selenium); without them it
is skipped with the apt line that enables it. Everything else runs against a real uvicorn server on a
free port, with the embedded dcgan-faces weights and a copy of the shipped SeFa file (the page
rewrites labels).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import select
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from latentdirs.directions import Directions
from latentdirs.explore.server import create_app, serving_in_thread
from latentdirs.explore.session import ExploreSession
from latentdirs.explore.worker import SUPERSEDED, LatestWins
from latentdirs.cli.explore import cli_message
from tests.conftest import invoke

SEFA = Path(__file__).resolve().parents[1] / "checkpoints" / "dcgan-faces-sefa.safetensors"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ENABLE = "apt-get install -y chromium chromium-driver"


@pytest.fixture
def workspace(tmp_path):
    directions = tmp_path / "faces.safetensors"
    shutil.copyfile(SEFA, directions)
    return directions, tmp_path / "views"


@pytest.fixture
def server(faces, workspace):
    """A real explorer server (loopback, no token) on a free port; yields its URL."""
    directions, views = workspace
    session = ExploreSession(faces, [directions], save_dir=views)
    with serving_in_thread(create_app(session, rename=cli_message)) as url:
        yield url


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _reproduces(cli_runner, folder: Path) -> None:
    """`latentdirs edit`, run with the manifest's own command, rewrites every file of ``folder`` identically."""
    before = _files(folder)
    command = json.loads(before["manifest.json"])["command"]
    words = shlex.split(command)
    assert words[:2] == ["latentdirs", "edit"]
    result = invoke(cli_runner, *words[1:])
    assert result.exit_code == 0, result.output
    after = _files(folder)
    assert sorted(after) == sorted(before)
    assert [name for name in before if after[name] != before[name]] == []


# ---------------------------------------------------------------------------------------------- worker
def test_worker_keeps_only_the_newest_waiting_request_of_a_client():
    worker = LatestWins()
    gate = threading.Event()
    try:
        running = worker.submit(lambda: gate.wait(5) and "first", key="a")
        while worker.started < 1:
            time.sleep(0.001)
        waiting = [worker.submit(lambda k=k: k, key="a") for k in range(20)]  # a drag: 20 moves
        other = worker.submit(lambda: "b", key="b")
        labelled = worker.submit(lambda: "label")  # no key: never dropped
        gate.set()
        assert running.result(5) == "first"
        assert [f.result(5) for f in waiting[:-1]] == [SUPERSEDED] * 19
        assert waiting[-1].result(5) == 19 and other.result(5) == "b" and labelled.result(5) == "label"
        assert worker.started == 4  # first, the newest of "a", "b", the label: not 23 renders
    finally:
        worker.close()


# ---------------------------------------------------------------------------------------------- HTTP
def test_render_returns_the_tile_latentdirs_edit_renders(server, workspace, faces, cli_runner, tmp_path):
    response = requests.get(server + "api/render", params={"file": 0, "index": 1, "strength": "1.5", "seed": 3},
                            timeout=30)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    info = json.loads(response.headers["X-Render"])
    assert info["alpha"] == 1.5 and info["label"] == "d1 yaw"
    # the same view through the CLI: its one-tile strip is the page's image, byte for byte
    directions, _ = workspace
    result = invoke(cli_runner, "edit", directions, "--seeds", "3", "--indices", "1", "--alphas", "1.5",
                    "-o", tmp_path / "cli")
    assert result.exit_code == 0, result.output
    from PIL import Image
    import io
    import numpy as np

    strip = np.asarray(Image.open(tmp_path / "cli" / "strips" / "d001_seed3.png").convert("RGB"))
    page = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert page.shape == (64, 64, 3)
    assert any(np.array_equal(page, strip[y:y + 64, x:x + 64]) for y in range(strip.shape[0] - 63)
               for x in range(strip.shape[1] - 63))


@pytest.mark.parametrize("fields, cli_words", [
    ({"index": "99"}, ["--indices", "99"]),
    ({"truncation": "2"}, ["--truncation", "2"]),
    ({"class": "blue"}, ["--class", "blue"]),
    ({"layers": "0"}, ["--layers", "0"]),
])
def test_a_bad_parameter_gets_400_and_the_line_the_cli_prints(server, workspace, cli_runner, tmp_path, fields,
                                                              cli_words):
    query = {"file": 0, "index": 1, "strength": "1", "seed": 0, **fields}
    response = requests.get(server + "api/render", params=query, timeout=30)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    line = response.text
    assert line.endswith("\n") and line.count("\n") == 1 and line.startswith("Error: ")
    directions, _ = workspace
    result = invoke(cli_runner, "edit", directions, "--seeds", "0", "--alphas", "1",
                    *(["--indices", "1"] if "index" not in fields else []), *cli_words, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr == line  # the very line the CLI prints


@pytest.mark.parametrize("query, message", [
    ({"strength": "x"}, "--alphas: got 'x'"),
    ({"seed": "-1"}, "--seeds: got '-1'"),
    ({"strength": "nan"}, "--alphas"),
    ({"file": "1"}, "file: got '1'; allowed: 0-0"),
    ({"photo": "0", "seed": ""}, "photo: got '0'; allowed: none: no --latents file"),
    ({"path": "/etc/passwd"}, "parameter: got 'path'"),
    ({"client": "../x"}, "client: got '../x'"),
])
def test_every_render_parameter_is_validated(server, query, message):
    response = requests.get(server + "api/render", params={"file": 0, "index": 1, "strength": "1", "seed": 0, **query},
                            timeout=30)
    assert response.status_code == 400, response.text
    assert response.text.startswith(f"Error: {message}") and response.text.count("\n") == 1


def _raw_get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..``)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("GET", path, skip_host=bool(headers and "Host" in headers))
    for key, value in (headers or {}).items():
        connection.putheader(key, value)
    connection.endheaders()
    response = connection.getresponse()
    return response.status, response.read()


def test_path_traversal_reads_and_writes_nothing_outside(server, workspace, tmp_path):
    for path in ("/static/../../../../etc/passwd", "/static/..%2f..%2fsession.py", "/static/%2e%2e/server.py",
                 "/static/app.js/../../session.py", "/../pyproject.toml", "/static/"):
        status, body = _raw_get(server, path)
        assert status == 404, path
        assert b"root:" not in body and b"import" not in body
    directions, views = workspace
    outside = tmp_path / "outside"
    outside.mkdir()
    (views / "link").symlink_to(outside)
    for folder, status in (("../outside", 400), ("a/b", 400), ("/tmp/x", 400), (".hidden", 400), ("link", 409)):
        response = requests.post(server + "api/save", json={"file": 0, "index": 1, "strength": 1, "seed": 0,
                                                            "folder": folder}, timeout=30)
        assert response.status_code == status, (folder, response.text)
        assert response.text.startswith("Error: folder: got") and response.text.count("\n") == 1
    assert list(outside.iterdir()) == [] and not (tmp_path / "x").exists()
    response = requests.post(server + "api/label", json={"file": "../../etc/passwd", "index": 0, "name": "x"},
                             timeout=30)
    assert response.status_code == 400 and response.text.startswith("Error: file: got '../../etc/passwd'")


def test_loopback_server_refuses_other_host_names_and_cross_site_posts(server, workspace):
    status, body = _raw_get(server, "/api/config", {"Host": "attacker.example:80"})
    assert status == 403 and body.startswith(b"Error: host: got 'attacker.example:80'")
    form = requests.post(server + "api/label", data={"file": 0, "index": 0, "name": "pwned"}, timeout=30)
    assert form.status_code == 403 and form.text.startswith("Error: content-type")
    foreign = requests.post(server + "api/label", json={"file": 0, "index": 0, "name": "pwned"},
                            headers={"Origin": "https://attacker.example"}, timeout=30)
    assert foreign.status_code == 403 and foreign.text.startswith("Error: origin: got 'https://attacker.example'")
    huge = requests.post(server + "api/label", data=b"{" + b" " * 100_000 + b"}",
                         headers={"Content-Type": "application/json"}, timeout=30)
    assert huge.status_code == 400 and huge.text.startswith("Error: body: got 'more than 16384 bytes'")
    directions, _ = workspace
    assert Directions.load(directions).labels.get(0) is None  # nothing was written


def test_with_host_every_request_needs_the_printed_token(workspace):
    directions, _ = workspace
    process = subprocess.Popen([sys.executable, "-m", "latentdirs.cli.main", "explore", str(directions),
                                "--host", "127.0.0.1", "--port", "0", "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)  # the server prints its URL when it binds
        assert ready, "latentdirs explore printed no URL within 120 s"
        line = process.stdout.readline()
        assert "?token=" in line, (line, process.stderr.read() if process.poll() is not None else "")
        url = line.split("open ", 1)[1].split()[0]
        base, token = url.split("?token=")
        deadline = time.monotonic() + 30
        while True:  # the URL is printed just before uvicorn starts accepting
            try:
                page = requests.get(url, timeout=30)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert page.status_code == 200 and f"/static/app.js?token={token}".encode() in page.content
        for path in ("", "static/app.js", "api/config", "api/render?file=0&index=0&strength=1&seed=0"):
            assert requests.get(base + path, timeout=30).status_code == 403, path
            wrong = "&" if "?" in path else "?"
            # the last character changed (to one it is not: a token may end in "x")
            forged = token[:-1] + ("y" if token.endswith("x") else "x")
            assert requests.get(base + path + wrong + "token=" + forged, timeout=30).status_code == 403
        assert requests.get(base + "api/config", params={"token": token}, timeout=30).status_code == 200
        response = requests.post(base + "api/label", json={"file": 0, "index": 0, "name": "x"}, timeout=30)
        assert response.status_code == 403 and response.text.startswith("Error: token")
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------- browser
def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1100,860", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


_PIXELS = """const img = document.getElementById('view');
if (!img.complete || !img.naturalWidth) return null;
const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext('2d'); g.drawImage(img, 0, 0);
return Array.from(g.getImageData(0, 0, c.width, c.height).data).join(',');"""


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason=f"needs Debian's chromium and chromium-driver: {ENABLE}")
def test_the_page_moves_a_face_labels_a_direction_and_saves_an_edit(server, workspace, cli_runner, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    directions, views = workspace
    browser = _browser()
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(server)
        wait.until(lambda b: b.execute_script(_PIXELS))  # the first render arrived
        before = hashlib.sha256(browser.execute_script(_PIXELS).encode()).hexdigest()
        assert browser.find_element(By.ID, "label-0-1").get_attribute("value") == "yaw"

        slider = browser.find_element(By.ID, "slider-0-1")
        slider.send_keys(Keys.END)  # the slider to its end: +3
        wait.until(lambda b: "index=1&strength=3" in (b.find_element(By.ID, "view").get_attribute("data-view") or ""))
        wait.until(lambda b: hashlib.sha256((b.execute_script(_PIXELS) or "").encode()).hexdigest() != before)
        assert "d1 yaw at 3" in browser.find_element(By.ID, "status").text

        label = browser.find_element(By.ID, "label-0-1")
        label.clear()
        label.send_keys("head turn")
        browser.find_element(By.ID, "label-button-0-1").click()
        wait.until(lambda b: "labelled" in b.find_element(By.ID, "status").text)
        assert Directions.load(directions).labels[1] == "head turn"
        assert Directions.load(directions).labels[2] == "hair length"  # the others are kept

        folder = browser.find_element(By.ID, "folder")
        folder.clear()
        folder.send_keys("turned")
        browser.find_element(By.ID, "save").click()
        wait.until(lambda b: "latentdirs edit" in b.find_element(By.ID, "saved").text)
        assert browser.find_element(By.ID, "error").text == ""
        screenshot = browser.get_screenshot_as_png()
    finally:
        browser.quit()
    (tmp_path / "explore.png").write_bytes(screenshot)
    if os.environ.get("LATENTDIRS_EXPLORE_SCREENSHOT"):  # how docs/img/explore.png is made
        Path(os.environ["LATENTDIRS_EXPLORE_SCREENSHOT"]).write_bytes(screenshot)

    manifest = json.loads((views / "turned" / "manifest.json").read_text())
    assert manifest["alphas"] == [0.0, 3.0] and manifest["seeds"] == [0] and manifest["indices"] == [1]
    assert manifest["directions"]["labels"]["1"] == "head turn"
    _reproduces(cli_runner, views / "turned")


# ---------------------------------------------------------------------------------------------- every kind of view
def _photos(generator, folder: Path) -> Path:
    """A latents file of two "photos" (latents drawn from seeds) of ``generator``, as invert writes one."""
    from latentdirs.latent_file import Latents

    tensor = generator.sample_seeds([11, 12], space="z")
    return Latents.create(tensor, generator=generator, space="z", labels=["me", "you"]).save(folder / "me.safetensors")


def _calibrated(generator, folder: Path) -> Path:
    """A calibrated file as ``-m regression`` writes one (its monotone map given here, not fitted: fitting
    takes minutes): SeFa's yaw direction, the amount a tenth of the coordinate within ±4."""
    import torch

    from latentdirs.calibration import KIND

    vector = Directions.load(SEFA).vectors[1:2]
    knots_x = torch.linspace(-4, 4, 9)
    meta = {"generator": generator.describe(), "space": "z",
            "calibration": {"kind": KIND, "transform": "shift-x", "factor": "horizontal shift", "units": "width",
                            "range": [-0.4, 0.4]}}
    calibrated = Directions(vector, meta=meta, calibration={"knots_x": knots_x, "knots_y": knots_x / 10})
    return calibrated.save(folder / "shift.safetensors")


def _stylegan(folder: Path):
    import latentdirs
    from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

    return latentdirs.load_generator(f"stylegan2:{write_nvlabs_pickle(random_network(tiny_config()), folder / 'g.pkl')}",
                                     device="cpu")


@pytest.mark.parametrize("kind", ["seed-truncation", "photo", "class", "calibrated", "layers"])
def test_save_writes_an_edit_that_latentdirs_edit_reproduces(kind, request, tmp_path, cli_runner):
    import latentdirs

    latents, view = None, {"file": 0, "index": 1, "strength": "-1.25", "seed": 5}
    if kind in ("seed-truncation", "photo"):
        generator = request.getfixturevalue("faces")
        directions = tmp_path / "faces.safetensors"
        shutil.copyfile(SEFA, directions)
        if kind == "photo":
            latents = _photos(generator, tmp_path)
            view = {**view, "seed": "", "photo": 1}
        else:
            view["truncation"] = "0.7"
    elif kind == "class":
        generator = request.getfixturevalue("eyes")
        directions = tmp_path / "eyes.safetensors"
        shutil.copyfile(SEFA.with_name("dcgan-eyes-sefa.safetensors"), directions)
        view["class"] = "hazel"
    elif kind == "calibrated":
        generator = request.getfixturevalue("faces")
        directions = _calibrated(generator, tmp_path)
        view = {**view, "index": 0, "strength": "0.3"}  # an amount of the factor; clamped where unreachable
    else:
        generator = _stylegan(tmp_path)
        directions = latentdirs.discover(generator, "sefa", layers="0-3", num_directions=3).save(
            tmp_path / "style.safetensors")
        view["layers"] = "2-5"
    session = ExploreSession(generator, [directions], latents_path=latents, save_dir=tmp_path / "views")
    config = session.config()["files"][0]
    with serving_in_thread(create_app(session, rename=cli_message)) as url:
        shown = requests.get(url + "api/render", params=view, timeout=60)
        assert shown.status_code == 200, shown.text
        saved = requests.post(url + "api/save", json={**view, "folder": kind}, timeout=60)
        assert saved.status_code == 200, saved.text
    command = saved.json()["command"]
    if kind == "photo":
        assert f"--latents {latents.resolve()}" in command and "--seeds" not in command
    elif kind == "seed-truncation":
        assert "--truncation 0.7" in command
    elif kind == "class":
        assert "--class 6" in command and session.config()["generator"]["classes"][6] == "hazel"
    elif kind == "calibrated":
        assert config["strength"]["calibrated"] and config["strength"]["units"]
        assert "--amounts 0.0,0.3 --clamp-amounts" in command
    else:
        assert config["layered"] and config["num_layers"] == 8 and "--layers 2,3,4,5" in command
    _reproduces(cli_runner, tmp_path / "views" / kind)

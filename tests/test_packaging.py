"""The wheel carries everything the package needs at run time.

Builds the wheel from a copy of what an sdist holds (so the checkout gets no ``build/``),
installs it with ``--no-deps`` into a fresh virtual environment, makes the already-installed
dependencies visible through a ``.pth`` line naming this environment's ``site-packages`` (path
lines in a ``.pth`` are not processed, so the editable install's finder, which would import
the checkout, stays inactive), and runs the console scripts from a directory outside the
checkout: ``adacode-restore`` on an embedded image with the shipped model (with TensorFlow,
torch, tfds, clu and grain made unimportable: the base install needs none of them), a 2-step
``adacode-train`` by bare config name, and ``adacode-demo --no-train``.

Slow (a few minutes on 2 cores); ``ADACODE_SKIP_PACKAGING=1`` skips it locally. ``make test``
runs it.
"""
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_ENV = "ADACODE_SKIP_PACKAGING"
pytestmark = pytest.mark.skipif(os.environ.get(SKIP_ENV, "") not in ("", "0"),
                                reason=f"{SKIP_ENV} is set")
# Modules the base install (restore, evaluate, export) must not need.
HEAVY = ("tensorflow", "tensorflow_datasets", "torch", "clu", "grain", "tensorboard")
# A .pth line: when ADACODE_TEST_BLOCK names modules, make them unimportable (sys.modules[m] =
# None makes `import m` raise ImportError), as if they were not installed.
BLOCKER = ("import os, sys; [sys.modules.__setitem__(m, None) for m in "
           "os.environ.get('ADACODE_TEST_BLOCK', '').split(',') if m]\n")
SCRIPTS = ("adacode-train", "adacode-restore", "adacode-evaluate", "adacode-export",
           "adacode-convert", "adacode-make-testset", "adacode-demo", "adacode-app", "adacode-bench")


def _run(cmd, *, cwd, env, timeout=600):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(os.path.join(REPO, "adacode_jax"), src / "adacode_jax",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(os.path.join(REPO, f), src / f)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(tmp / "dist"), str(src)], cwd=tmp, env=dict(os.environ))
    (whl,) = (tmp / "dist").glob("adacode_jax-*.whl")
    return whl


def test_wheel_holds_configs_images_evalset_models_and_scripts(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for cfg in ("stage1_codebook", "stage2_adacode", "stage3_inpaint", "stage3_sr", "__init__"):
        assert f"adacode_jax/configs/{cfg}.py" in names
    images = [n for n in names if n.startswith("adacode_jax/assets/images/") and n.endswith(".png")]
    assert len(images) == 11
    assert "adacode_jax/assets/LICENSES" in names and "adacode_jax/assets/evalset/manifest.json" in names
    assert sum(n.startswith("adacode_jax/assets/evalset/gt/") for n in names) == 23
    assert any(n.startswith("adacode_jax/pretrained/compact_sr_x4/") for n in names)
    assert "adacode_jax/tools/corpus_classes.csv" in names
    assert "adacode_jax/ops/winograd.cc" in names      # compiled where it runs
    assert not any(n.startswith(("tests/", "launch/", "configs/", "assets/")) for n in names)
    for script in SCRIPTS:
        assert f"{script} = adacode_jax.cli." in entry_points
    # the base install needs neither TensorFlow nor torch; training is an extra
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert not any(h.replace("_", "-") in r for r in base for h in HEAVY), base
    # training needs no TensorFlow: only TFDS sources do (the tfds extra)
    train = [r for r in requires if 'extra == "train"' in r]
    assert any(r.lower().startswith("requires-dist: tensorboardx==") for r in train), train
    assert not any("tensorflow" in r for r in train), train
    assert any("tensorflow-cpu==2.21.0" in r and 'extra == "tfds"' in r for r in requires)


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh venv with the wheel installed; the dependencies come from this environment."""
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=root, env=dict(os.environ))
    py = env_dir / "bin" / "python"
    # pip of this environment installs into the new one (the .pth is not there yet: nothing of
    # ours is visible to it, so it installs rather than finding adacode-jax satisfied)
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
          "--no-index", str(wheel)], cwd=root, env=dict(os.environ))
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=root, env=dict(os.environ)).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    with open(os.path.join(purelib, "_adacode_test_deps.pth"), "w", encoding="utf-8") as fh:
        fh.write(BLOCKER)
        fh.write(ours + "\n")
        for extra in site.getsitepackages():
            if extra != ours:
                fh.write(extra + "\n")
    work = root / "outside"        # far from the checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "XLA_FLAGS", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}", JAX_PLATFORMS="cpu")
    return env_dir, work, env, purelib


def test_installed_package_is_the_wheel_not_the_checkout(venv):
    env_dir, work, env, purelib = venv
    r = _run([str(env_dir / "bin" / "python"), "-c",
              "import json, adacode_jax, adacode_jax.configs._base as c, adacode_jax.resources as r; "
              "print(json.dumps([adacode_jax.__file__, c.EMBEDDED_IMAGES, r.config_names()]))"],
             cwd=work, env=env)
    init, images, names = json.loads(r.stdout)
    assert init == os.path.join(purelib, "adacode_jax", "__init__.py")
    assert images.startswith(purelib) and len(os.listdir(images)) == 11
    assert names == ["stage1_codebook", "stage2_adacode", "stage3_inpaint", "stage3_sr"]
    for script in SCRIPTS:
        assert (env_dir / "bin" / script).exists(), script


def test_base_install_restores_evaluates_and_exports_without_tf_or_torch(venv):
    env_dir, work, env, purelib = venv
    blocked = {**env, "ADACODE_TEST_BLOCK": ",".join(HEAVY)}
    image = os.path.join(purelib, "adacode_jax", "assets", "images", "chelsea.png")
    _run(["adacode-restore", "-i", image, "-o", "restored", "--no-progress"], cwd=work, env=blocked)
    from PIL import Image

    with Image.open(work / "restored" / "chelsea.png") as out, Image.open(image) as inp:
        assert out.size == (4 * inp.size[0], 4 * inp.size[1])    # the shipped x4 model
    # imports of the other two base tools, under the same block
    r = _run([str(env_dir / "bin" / "python"), "-c",
              "import sys, adacode_jax.cli.evaluate, adacode_jax.cli.export, adacode_jax.evaluation.evaluate, "
              "adacode_jax.inference.export, adacode_jax.inference.restorer; "
              f"print(sorted(m for m in {HEAVY!r} if sys.modules.get(m)))"], cwd=work, env=blocked)
    assert r.stdout.strip() == "[]"


def test_training_without_tensorflow_by_bare_config_name_from_outside_the_checkout(venv):
    """Trains 2 steps, then resumes to 3 (a resume reads and rewrites the TensorBoard event
    files), with TensorFlow, TFDS and torch unimportable."""
    env_dir, work, env, purelib = venv
    blocked = {**env, "ADACODE_TEST_BLOCK": "tensorflow,tensorflow_datasets,torch"}
    for steps in (2, 3):
        _run(["adacode-train", "--config", "stage2_adacode:tiny", "--workdir", "run_s2",
              f"--config.train.num_steps={steps}", "--config.train.log_every=1",
              "--config.train.allow_random_codebooks=True",
              "--config.train.eval_at_start=False", "--config.train.eval_every=0",
              "--config.train.image_every=0", "--config.train.w_gan=0.0",  # fewer programs to
              "--config.train.w_lpips=0.0"], cwd=work, env=blocked)          # compile
    with open(work / "run_s2" / "export" / "generator" / "model.json", encoding="utf-8") as fh:
        assert json.load(fh)["step"] == 3
    with open(work / "run_s2" / "metrics.jsonl", encoding="utf-8") as fh:
        assert [json.loads(line)["step"] for line in fh if "loss/g_total" in line] == [1, 2, 3]
    assert os.listdir(work / "run_s2" / "tensorboard")
    r = _run(["adacode-train", "--config", "stage3_sr:x4,tiny", "--describe"], cwd=work, env=env)
    assert f"{purelib}/adacode_jax/configs/stage3_sr.py:x4,tiny" in r.stdout.splitlines()[0]


def test_demo_runs_from_the_installed_package(venv):
    env_dir, work, env, purelib = venv
    r = _run(["adacode-demo", "--workdir", "demo", "--no-train"], cwd=work, env=env)
    assert "demo finished" in r.stdout

"""The training command answers questions: ``--help`` lists the configs and their variants,
``--describe`` prints every field of a config with its value and the comment that explains it,
and config names work from any directory."""
import os
import subprocess
import sys

import pytest

from adacode_jax.configs import _base as config_lib
from adacode_jax import resources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "adacode_jax.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_help_lists_configs_variants_flags_and_examples(tmp_path):
    r = _train("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for name in ("stage1_codebook", "stage2_adacode", "stage3_inpaint", "stage3_sr"):
        assert f"\n  {name}\n" in out
    # what each trains (the config's docstring) and its variants (its VARIANTS line)
    assert "Stage III (paper §3.3): blind super-resolution x2 / x4 with the frozen AdaCode decoder." in out
    assert "variants: x4 (default) | x2; add ,tiny (CPU smoke run) or ,compact" in out
    assert "architecture | indoor | natural | street | portrait (default) | all" in out
    assert "  --config NAME[:VARIANT] | FILE.py[:VARIANT]\n" in out
    assert "  --describe\n" in out and "  --workdir DIR\n" in out
    assert "default: 'None'" not in out and "(default: None)" not in out
    examples = out.split("Examples:\n", 1)[1]
    assert "adacode-train --config stage3_sr:x4,tiny --workdir runs/tiny_sr" in examples
    assert "--config.train.stage2_checkpoint=" in examples


def test_describe_prints_each_field_with_value_and_comment(tmp_path):
    r = _train("--config", "stage3_sr:x4,tiny", "--config.train.num_steps=7", "--describe",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("# --config ") and "stage3_sr.py:x4,tiny" in lines[0]
    assert "--config.train.num_steps=7" in lines[0]

    def block(field):
        i = next(i for i, line in enumerate(lines) if line.split(" = ")[0] == field)
        rest = []
        for line in lines[i + 1:]:
            if not line.startswith("    "):
                break
            rest.append(line.strip())
        return lines[i], " ".join(rest)

    # the override, the base default it replaces, and the comment in config_lib.base_config
    assert block("train.num_steps") == ("train.num_steps = 7    (base: 350000)",
                                        "paper: 350k iterations")
    assert block("stage") == ("stage = 3", "1: class codebook, 2: AdaCode recon, 3: restoration")
    assert block("train.lr_g") == ("train.lr_g = 0.001    (base: 0.0001)",
                                   "Adam, betas (0.9, 0.99), no weight decay")
    assert block("eval.y_space")[1] == "Y channel for PSNR/SSIM ('ycbcr' or 'yiq')"
    # fields of the model and data defaults, documented where they are defined
    assert block("model.swin_dim") == ("model.swin_dim = 32    (base: 256)",
                                       "Swin embedding dim (must equal C[codebook_scale])")
    assert block("data.use_flip") == ("data.use_flip = True", "Horizontal flip with p = 0.5.")
    assert block("data.scale")[0] == "data.scale = 4"
    # every field of the config is listed, in definition order (stage first)
    fields = [line.split(" = ")[0] for line in lines if " = " in line and not line.startswith(("#", " "))]
    assert fields[0] == "stage" and len(fields) == len(set(fields)) > 80
    assert not os.listdir(tmp_path)   # nothing written


def test_config_by_path_still_works_in_a_checkout():
    r = _train("--config=configs/stage3_sr.py:x2,tiny", "--describe", cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "\ndata.scale = 2\n" in r.stdout and "\nmodel.scale_factor = 2\n" in r.stdout


@pytest.mark.parametrize("args, message", [
    (("--config", "nope", "--workdir", "w"),
     "error: --config nope: no packaged config named 'nope'; use one of stage1_codebook, "
     "stage2_adacode, stage3_inpaint, stage3_sr"),
    (("--config", "stage3_sr:x4,tiny"), "error: --workdir is missing; give the run directory"),
    (("--workdir", "w"), "error: --config is missing; give one, e.g. --config stage3_sr:x4,tiny"),
    (("--config", "stage3_sr:x9", "--describe"), "unknown variant 'x9'; use x2 or x4"),
    (("--config", "stage3_sr:x4", "--config.train.nope=1", "--describe"),
     "error: --config.train.nope: no config field 'nope'; adacode-train --config ... --describe"),
])
def test_mistakes_are_one_line_errors(tmp_path, args, message):
    r = _train(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not os.listdir(tmp_path)


def test_field_comments_follow_aliases_groups_and_config_files():
    notes = config_lib.field_comments(os.path.join(resources.CONFIGS_DIR, "stage1_codebook.py"))
    assert notes["train.lr_g"] == "Adam, betas (0.9, 0.99), no weight decay"   # t = c.train
    assert notes["mesh.fsdp"] == "parameter-sharding axis"                      # m = c.mesh
    assert notes["disc.num_feat"] == "base width of the U-Net discriminator"
    assert notes["train.inference_overlap"] == "(see train.inference_tile)"     # comment block
    # a config file's own comments join the base's
    assert "stage I yaml: semantic loss on VGG19 relu4_4" in notes["model.use_semantic_loss"]


def test_configs_resolve_by_name_and_path():
    path = resources.resolve_config("stage2_adacode:tiny")
    assert path == os.path.join(resources.CONFIGS_DIR, "stage2_adacode.py") + ":tiny"
    assert resources.resolve_config("stage2_adacode") == path[:-len(":tiny")]
    assert resources.resolve_config(os.path.join(REPO, "configs", "stage3_sr.py:x2")).endswith(":x2")
    assert resources.load_config("stage3_sr:x2,tiny").data.scale == 2
    assert {s.name: bool(s.variants and s.summary) for s in resources.config_summaries()} == {
        "stage1_codebook": True, "stage2_adacode": True, "stage3_inpaint": True, "stage3_sr": True}

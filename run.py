"""gan_jax entry point: flags -> config -> mode (train | eval | sample | synthesize, and for StyleGAN2 generate |
style_mixing | interpolate | project).

python run.py --config=configs/dcgan.py --workdir=runs/dcgan
python run.py --config=configs/dcgan.py --workdir=runs/dcgan --mode=sample --num_samples=1000 --out=samples.npz

A labelled synthetic dataset from a class-conditional model (gan_jax/tools/synthetic.py): --out ending in .npz gives
an npz (x, label, metadata), anything else a folder OUT/train/<class>/<i>.png (TFDS ImageFolder's layout; gan_jax
reads it with --config.data.name=folder --config.data.path=OUT/train):
python run.py --config=configs/sngan.py --workdir=runs/sngan --mode=synthesize --per_class=6000 --out=synthetic.npz

StyleGAN2 only (gan_jax/tools/stylegan_tools.py, gan_jax/tools/projector.py), written under --out (default
WORKDIR/<mode>); seed s always gives the same image:
python run.py --config=configs/stylegan.py --workdir=runs/stylegan --mode=generate --seeds=0-7,12 --psi=0.7
python run.py --config=configs/stylegan.py --workdir=runs/stylegan --mode=style_mixing --seeds=0-4 --col_seeds=5-9
python run.py --config=configs/stylegan.py --workdir=runs/stylegan --mode=interpolate --seeds=0-3 --num_frames=30
python run.py --config=configs/stylegan.py --workdir=runs/stylegan --mode=project --target=img.png --w_plus
"""

from gan_jax.env import configure_xla  # sets XLA_FLAGS before JAX initializes

configure_xla()

import json  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with an argument: configs/dcgan.py:mnist")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
STYLEGAN_MODES = ["generate", "style_mixing", "interpolate", "project"]  # gan_jax/tools/stylegan_cli.py
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample", "synthesize", *STYLEGAN_MODES], "What to do.")
flags.DEFINE_integer("num_samples", 1000, "--mode=sample: how many samples.")
flags.DEFINE_string(
    "out",
    None,
    "--mode=sample: output .npz (WORKDIR/samples.npz); --mode=synthesize: a .npz file or else a folder "
    "(WORKDIR/synthetic.npz); StyleGAN2 modes: directory.",
)
flags.DEFINE_integer("sample_seed", 0, "--mode=sample and --mode=synthesize: seed of the latents.")
flags.DEFINE_integer("per_class", None, "--mode=synthesize: images of each class (required).")
flags.DEFINE_bool("overwrite", False, "--mode=synthesize: replace a non-empty --out instead of refusing.")
flags.DEFINE_string(
    "seeds",
    None,
    "StyleGAN2 modes: seeds as '0-7,12' (default: generate 0-7, style_mixing rows 0-4, interpolate 0-3); "
    "--mode=project: the first seeds its noise.",
)
flags.DEFINE_string("col_seeds", None, "--mode=style_mixing: the columns' seeds (default 5-9).")
flags.DEFINE_float("psi", 1.0, "StyleGAN2 modes: truncation psi (1: none).")
flags.DEFINE_integer("class_idx", None, "StyleGAN2 modes: the class of a class-conditional model.")
flags.DEFINE_integer("mixing_cutoff", None, "--mode=style_mixing: rows give ws [0, cutoff) (default: 4x4 and 8x8's).")
flags.DEFINE_integer("num_frames", 30, "--mode=interpolate: frames of the GIF.")
flags.DEFINE_string("target", None, "--mode=project: the image to project.")
flags.DEFINE_integer("num_steps", 1000, "--mode=project: optimization steps.")
flags.DEFINE_bool("w_plus", False, "--mode=project: optimize one w per layer (w+) instead of one w.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host jobs).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

    if FLAGS.distributed:
        jax.distributed.initialize()
    from gan_jax.errors import USER_ERRORS
    from gan_jax.tools.stylegan_tools import StyleGANToolError
    from gan_jax.tools.synthetic import SyntheticDataError

    if FLAGS.num_samples <= 0:
        raise app.UsageError(f"--num_samples={FLAGS.num_samples}: must be positive")
    try:
        config = FLAGS.config
        config.get("seed")
    except (OSError, ValueError) as e:  # the config file is missing, broken, or its argument is unknown
        print(f"error: --config: {e}", file=sys.stderr)
        return 2
    try:
        if FLAGS.mode == "train":
            from gan_jax.train.loop import train

            train(config, FLAGS.workdir)
        elif FLAGS.mode == "sample":
            from gan_jax.tools.generate import sample

            out = FLAGS.out or f"{FLAGS.workdir}/samples.npz"
            print(sample(config, FLAGS.workdir, FLAGS.num_samples, out, FLAGS.sample_seed))
        elif FLAGS.mode == "synthesize":
            from gan_jax.tools.synthetic import write_synthetic

            if FLAGS.per_class is None:
                raise SyntheticDataError("--mode=synthesize needs --per_class=N (images of each class)")
            out = FLAGS.out or f"{FLAGS.workdir}/synthetic.npz"
            spec = config_flags.get_config_filename(FLAGS["config"])
            print(
                write_synthetic(
                    config,
                    FLAGS.workdir,
                    FLAGS.per_class,
                    out,
                    FLAGS.sample_seed,
                    overwrite=FLAGS.overwrite,
                    config_name=spec,
                )
            )
        elif FLAGS.mode in STYLEGAN_MODES:
            from gan_jax.tools.stylegan_cli import run_tool

            paths = run_tool(
                FLAGS.mode,
                config,
                FLAGS.workdir,
                out=FLAGS.out,
                seeds=FLAGS.seeds,
                col_seeds=FLAGS.col_seeds,
                psi=FLAGS.psi,
                class_idx=FLAGS.class_idx,
                cutoff=FLAGS.mixing_cutoff,
                num_frames=FLAGS.num_frames,
                target=FLAGS.target,
                num_steps=FLAGS.num_steps,
                w_plus=FLAGS.w_plus,
            )
            print("\n".join(paths))
        else:
            from gan_jax.tools.generate import evaluate

            print(json.dumps(evaluate(config, FLAGS.workdir)))
    except (*USER_ERRORS, StyleGANToolError, SyntheticDataError) as e:
        logging.error("%s: %s", type(e).__name__, e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _override_problem(argv: list[str]) -> str:
    """Which --config.KEY=VALUE of argv names no field of the config, for a one-line error."""
    from gan_jax.config import load_config

    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return ""
    try:
        config = load_config(spec)
    except Exception:  # noqa: BLE001 - the config file's own error is reported by the caller
        return ""
    for arg in argv:
        if arg.startswith("--config.") and "=" in arg:
            path = arg[len("--config.") : arg.index("=")]
            node = config
            for i, part in enumerate(path.split(".")):
                if not hasattr(node, "keys") or part not in node:
                    parent = ".".join(path.split(".")[:i]) or "config"
                    fields = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none"
                    return f"--config.{path}: {spec} has no field {part!r} in {parent} (its fields: {fields})"
                node = node[part]
    return ""


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config-override mistakes reported in one line instead of a traceback."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        if any(line.startswith("Traceback") for line in lines):  # config_flags embeds the config file's traceback
            lines = [lines[0], lines[-1]]
        print("error: " + "\n".join(lines) + "\nPass --helpfull to see the flags.", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - ml_collections raises AttributeError/KeyError/TypeError/ValueError here
        problem = _override_problem(argv) or f"{type(e).__name__}: {e}"
        print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

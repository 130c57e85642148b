"""gan_jax entry point: flags -> config -> mode (train | eval | sample).

python run.py --config=configs/dcgan.py --workdir=runs/dcgan
python run.py --config=configs/dcgan.py --workdir=runs/dcgan --mode=sample --num_samples=1000 --out=samples.npz
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
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to do.")
flags.DEFINE_integer("num_samples", 1000, "--mode=sample: how many samples.")
flags.DEFINE_string("out", None, "--mode=sample: output .npz (default WORKDIR/samples.npz).")
flags.DEFINE_integer("sample_seed", 0, "--mode=sample: seed of the latents.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host jobs).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

    if FLAGS.distributed:
        jax.distributed.initialize()
    from gan_jax.errors import USER_ERRORS

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
        else:
            from gan_jax.tools.generate import evaluate

            print(json.dumps(evaluate(config, FLAGS.workdir)))
    except USER_ERRORS as e:
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

"""scripts/serve.py: a page to draw a digit on, and the HTTP API that reads it."""

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import List, Optional

from ..errors import UserError
from .common import Parser, Terminated, class_names, device_flag


def parser() -> argparse.ArgumentParser:
    p = Parser("Serve a page to draw a digit on, read by a checkpoint (POST /predict takes any image).")
    p.add_argument("--checkpoint", default="ckpt.pt", help="checkpoint written by train.py (default: ckpt.pt)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but loopback opens it to the network (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on, 0 for any free one (default: 8000)")
    p.add_argument("--max-body", type=int, default=1_000_000, help="largest image accepted, bytes (default: 1000000)")
    device_flag(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be from 0 to 65535, got {args.port}")
    if args.max_body <= 0:
        raise UserError(f"--max-body must be a positive number of bytes, got {args.max_body}")
    from ..training.checkpoint import build_model, checkpoint_config, checkpoint_normalization, load_checkpoint
    from ..training.epoch import predict_probabilities
    from ..training.runtime import resolve_device  # the heavy imports, after the flags
    from ..deploy.serve import DigitReader, is_loopback, make_server, serve_until_interrupted

    checkpoint = load_checkpoint(Path(args.checkpoint))
    device = resolve_device(args.device)
    model, normalization = build_model(checkpoint, device), checkpoint_normalization(checkpoint)
    config = checkpoint_config(checkpoint)
    reader = DigitReader(partial(predict_probabilities, model, normalization, device=device),
                         class_names(config.dataset), describe_model(Path(args.checkpoint).name, config,
                                                                     checkpoint["epoch"]))
    try:
        server = make_server(reader, args.host, args.port, args.max_body)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror})") from None
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the page",
              file=sys.stderr)
    host, port = server.server_address[:2]
    try:
        serve_until_interrupted(server, f"serving {args.checkpoint} at http://{host}:{port}/ (Ctrl-C stops)")
    except KeyboardInterrupt as e:  # Ctrl-C is how a server is meant to stop; SIGTERM says so in its status
        print("stopped", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 0
    return 0


def describe_model(name: str, config, epochs: int) -> str:
    """One line on the page: the file, its layers and how it was trained."""
    layers = "-".join(str(width) for width in (784, *config.hidden, 10))
    training = f"digits distorted ({', '.join(config.distort)})" if config.distort else "MNIST's digits as they are"
    return f"{name}: a {layers} MLP trained {epochs} epochs on {training}"

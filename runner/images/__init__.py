"""The trainer images: pins, build context and build (the Dockerfiles' inputs live in the checkout's images/)."""

from runner._moved import forward

__getattr__ = forward("runner.images.builder")  # runner/cli.py's `images.find_image`, …; goes at merge

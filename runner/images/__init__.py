"""The trainer images: pins, build context and build (the Dockerfiles' inputs live in the checkout's images/)."""

"""The local development stack: private broker and Redis processes, and the demo built on them."""

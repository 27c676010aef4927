"""Headless Chromium for the page tests: Debian's binary and the flags a closed network needs."""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # else it opens connections the network refuses
    "--disable-component-update",
    "--disable-sync",
]

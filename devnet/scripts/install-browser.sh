#!/bin/sh
# Install the headless Chromium that the explorer's browser test drives, and a font with
# Chinese glyphs for the explorer's Simplified Chinese page (Debian packages; Playwright
# uses the browser through executable_path, no Playwright browser download).
# Idempotent: does nothing when a chromium binary is on PATH and fontconfig knows a font
# covering Chinese.
set -eu

have_chromium() {
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then
            echo "chromium present: $(command -v "$name")"
            return 0
        fi
    done
    return 1
}

have_chinese_font() {
    command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh-cn family 2>/dev/null)" ]
}

if have_chromium && have_chinese_font; then
    echo "a font with Chinese glyphs is present: $(fc-list :lang=zh-cn family | head -n 1)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get on this machine; install chromium and fonts-noto-cjk by hand" >&2
    exit 2
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-browser: not root and no password-less sudo; install chromium and fonts-noto-cjk by hand" >&2
        exit 2
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# fonts-noto-cjk: Noto Sans CJK SC, the glyphs of the explorer's zh-CN page
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core fonts-noto-cjk
command -v chromium
have_chinese_font

#!/usr/bin/env bash
# Install and cache what the real-component tests need (see docs in tests/testbed/__init__.py):
#   1. Debian packages qemu-system-x86, busybox-static, cpio, redis-server (the referenced source's
#      Redis test; apt-get update only if one is missing);
#   2. a Debian cloud guest kernel, downloaded with `apt-get download` (never installed) and unpacked
#      into $CACHE/kernel/;
#   3. a busybox initramfs ($CACHE/initramfs.cpio.gz) whose /init is tests/testbed/guest/init,
#      rebuilt whenever its inputs change (hash stamp);
#   4. $CACHE/testbed.env, the manifest the Python harness (tests/testbed) reads.
# Idempotent and fast when everything is there. Fails loudly (non-zero exit) if anything cannot be
# fetched or built; never skips.
#
# Environment: WSRL_TESTBED_CACHE (default .cache/testbed), WSRL_GUEST_KERNEL_PKG (a specific
# linux-image-*-cloud-amd64 package; default: $PREFERRED_KERNEL_PKG below, else the newest one apt
# knows; chosen on the first run only, later runs reuse the cached kernel).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${WSRL_TESTBED_CACHE:-$ROOT/.cache/testbed}
GUEST_DIR=$ROOT/tests/testbed/guest
PACKAGES=(qemu-system-x86 busybox-static cpio redis-server)
# The guest kernel the tests and tests/data/lru_gen/real-*.txt were made with; Debian drops old
# kernel ABIs from its mirrors, so when it is gone the newest linux-image-*-cloud-amd64 is used.
PREFERRED_KERNEL_PKG=linux-image-6.1.0-56-cloud-amd64
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_balloon
         virtio_console brd)

say() { echo "testbed: $*"; }
die() { echo "testbed: ERROR: $*" >&2; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "need root (or passwordless sudo) to run: $*"
    fi
}

is_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

ensure_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "packages present: ${PACKAGES[*]}"
        return
    fi
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
    for pkg in "${missing[@]}"; do
        is_installed "$pkg" || die "package $pkg is still not installed"
    done
}

check_tools() {
    local tool
    for tool in qemu-system-x86_64 busybox cpio gzip sha256sum redis-server; do
        command -v "$tool" >/dev/null || die "$tool not found on PATH"
    done
    busybox --list | grep -x insmod >/dev/null || die "busybox has no insmod applet"
}

newest_cloud_kernel_pkg() {
    apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-cloud-amd64$' \
        | awk '{print $1}' | sort -V | tail -n 1
}

# `apt-get download` package $1 into folder $2; print the .deb's path (nothing when it failed).
download_deb() {
    (cd "$2" && apt-get download -q "$1" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) \
        || true
    find "$2" -maxdepth 1 -name "${1}_*.deb" -print -quit
}

# Download and unpack the guest kernel once; later runs reuse $CACHE/kernel whatever apt offers.
ensure_kernel() {
    local kdir=$CACHE/kernel
    if [[ -f $kdir/PACKAGE && -f $kdir/RELEASE ]]; then
        say "guest kernel cached: $(cat "$kdir/PACKAGE") ($kdir)"
        return
    fi
    local pkg=${WSRL_GUEST_KERNEL_PKG:-}
    if [[ -z $pkg ]] && apt-cache show "$PREFERRED_KERNEL_PKG" >/dev/null 2>&1; then
        pkg=$PREFERRED_KERNEL_PKG
    elif [[ -z $pkg ]]; then
        say "$PREFERRED_KERNEL_PKG is not available (any more?); taking the newest cloud kernel"
        pkg=$(newest_cloud_kernel_pkg)
        if [[ -z $pkg ]]; then
            say "no cloud kernel in apt's lists; running apt-get update"
            as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
            pkg=$(newest_cloud_kernel_pkg)
        fi
        [[ -n $pkg ]] || die "apt-cache finds no linux-image-*-cloud-amd64 package"
    fi
    say "downloading guest kernel package $pkg"
    local tmp
    tmp=$(mktemp -d "$CACHE/kernel.tmp.XXXXXX")
    local deb
    deb=$(download_deb "$pkg" "$tmp")
    if [[ -z $deb ]]; then
        say "apt-get download $pkg failed; running apt-get update and trying once more"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
        deb=$(download_deb "$pkg" "$tmp")
    fi
    [[ -n $deb ]] || { rm -rf "$tmp"; die "apt-get download $pkg failed (see apt's messages above)"; }
    dpkg-deb -x "$deb" "$tmp/root" || { rm -rf "$tmp"; die "dpkg-deb -x $deb failed"; }
    local release
    release=$(find "$tmp/root/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' -quit)
    [[ -n $release && -f $tmp/root/boot/vmlinuz-$release ]] \
        || { rm -rf "$tmp"; die "$deb holds no boot/vmlinuz-<release> with modules"; }
    grep -qx 'CONFIG_LRU_GEN=y' "$tmp/root/boot/config-$release" \
        || { rm -rf "$tmp"; die "$pkg is built without CONFIG_LRU_GEN"; }
    echo "$pkg $(dpkg-deb -f "$deb" Version)" > "$tmp/root/PACKAGE"
    echo "$release" > "$tmp/root/RELEASE"
    rm -rf "$kdir"
    mv "$tmp/root" "$kdir"
    rm -rf "$tmp"
    say "guest kernel $release unpacked into $kdir"
}

# Hash of everything the initramfs is built from.
initramfs_inputs_hash() {
    {
        cat "$CACHE/kernel/PACKAGE" "$CACHE/kernel/RELEASE"
        echo "${MODULES[*]}"
        dpkg-query -W -f='${Version}\n' busybox-static
        (cd "$GUEST_DIR" && find . -type f | LC_ALL=C sort | xargs sha256sum)
        sha256sum "${BASH_SOURCE[0]}"
    } | sha256sum | cut -d' ' -f1
}

# Copy module $1 into $2, uncompressed (busybox insmod loads plain .ko files).
copy_module() {
    local name=$1 dest=$2 modroot=$CACHE/kernel/lib/modules/$(cat "$CACHE/kernel/RELEASE")
    local src
    src=$(find "$modroot/kernel" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \
          -o -name "$name.ko.gz" \) -print -quit)
    [[ -n $src ]] || die "module $name not found under $modroot"
    case $src in
        *.ko) cp "$src" "$dest/$name.ko" ;;
        *.xz) xz -dc "$src" > "$dest/$name.ko" ;;
        *.zst) zstd -qdc "$src" > "$dest/$name.ko" ;;
        *.gz) gzip -dc "$src" > "$dest/$name.ko" ;;
    esac
}

build_initramfs() {
    local out=$CACHE/initramfs.cpio.gz stamp=$CACHE/initramfs.sha256 hash
    hash=$(initramfs_inputs_hash)
    if [[ -f $out && -f $stamp && $(cat "$stamp") == "$hash" ]]; then
        say "initramfs up to date: $out"
        return
    fi
    say "building initramfs (inputs changed or missing)"
    local tmp
    tmp=$(mktemp -d "$CACHE/initramfs.tmp.XXXXXX")
    mkdir -p "$tmp"/{bin,dev,proc,sys,tmp,mnt,wsrl,lib/modules/wsrl}
    cp "$(command -v busybox)" "$tmp/bin/busybox"
    local applet
    for applet in $(busybox --list); do
        [[ $applet == busybox ]] || ln -s busybox "$tmp/bin/$applet"
    done
    install -m 0755 "$GUEST_DIR/init" "$tmp/init"
    install -m 0755 "$GUEST_DIR/workload" "$tmp/wsrl/workload"
    local m
    for m in "${MODULES[@]}"; do
        copy_module "$m" "$tmp/lib/modules/wsrl"
    done
    (cd "$tmp" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) \
        | gzip -9 > "$out.tmp" || { rm -rf "$tmp"; die "cpio/gzip of the initramfs failed"; }
    mv "$out.tmp" "$out"
    echo "$hash" > "$stamp"
    rm -rf "$tmp"
    say "initramfs built: $out ($(stat -c %s "$out") bytes)"
}

write_manifest() {
    local release
    release=$(cat "$CACHE/kernel/RELEASE")
    # KEY='value' lines: `source`-able, and read by tests/testbed with shlex.
    {
        printf "KERNEL='%s'\n" "$CACHE/kernel/boot/vmlinuz-$release"
        printf "INITRD='%s'\n" "$CACHE/initramfs.cpio.gz"
        printf "KERNEL_RELEASE='%s'\n" "$release"
        printf "KERNEL_PACKAGE='%s'\n" "$(cat "$CACHE/kernel/PACKAGE")"
        printf "QEMU='%s'\n" "$(command -v qemu-system-x86_64)"
        printf "QEMU_VERSION='%s'\n" "$(qemu-system-x86_64 --version | sed -n 1p)"
    } > "$CACHE/testbed.env.tmp"
    mv "$CACHE/testbed.env.tmp" "$CACHE/testbed.env"
    say "manifest: $CACHE/testbed.env"
}

main() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock -w 600 9 || die "another testbed.sh holds $CACHE/.lock"
    ensure_packages
    check_tools
    ensure_kernel
    build_initramfs
    write_manifest
    say "ready"
}

main "$@"

#!/usr/bin/env bash
# Builds hushd_VERSION_ARCH.deb from this tree with dpkg-deb alone (no debhelper, no
# cargo-deb): a release build, staged in a temporary root, with man pages and completions
# made by the binary itself (`hushd generate`). See packaging/README.md.
#
#   packaging/build-deb.sh [--profile PROFILE] [--binary PATH] [--out DIR]
#
#   --profile PROFILE  cargo profile to build (default: release)
#   --binary PATH      package this hushd instead of building one (tests pass the debug build)
#   --out DIR          where the .deb goes (default: target/debian)
#
# Needs: cargo (unless --binary), dpkg-deb and dpkg-shlibdeps (dpkg-dev), binutils (strip).
# Prints the path of the .deb on its last line.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
profile=release
binary=
out="$root/target/debian"
while [ $# -gt 0 ]; do
    case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

pkg="$root/packaging/debian"
fail() { echo "build-deb.sh: $*" >&2; exit 1; }
for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    command -v "$tool" >/dev/null || fail "$tool is missing (apt install dpkg-dev binutils)"
done

# The Debian version and the maintainer come from the changelog's newest entry; its upstream
# part must be Cargo.toml's version, so the package can never claim another version.
read -r _ debian_version _ < "$pkg/changelog"
debian_version="${debian_version#(}"
debian_version="${debian_version%)}"
cargo_version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)"
[ "${debian_version%-*}" = "$cargo_version" ] ||
    fail "packaging/debian/changelog is at $debian_version but Cargo.toml at $cargo_version: add a changelog entry"
trailer="$(grep -m1 '^ -- ' "$pkg/changelog")"
maintainer="$(sed 's/^ -- \(.*>\)  .*/\1/' <<<"$trailer")"
changelog_date="${trailer##*>  }"
# Reproducible: every timestamp in the package (man page dates, file times) is the changelog's.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(date -d "$changelog_date" +%s)}"
arch="$(dpkg --print-architecture)"

if [ -z "$binary" ]; then
    (cd "$root" && cargo build --locked --profile "$profile" --bin hushd)
    case "$profile" in
    dev|test) binary="$root/target/debug/hushd" ;;
    *) binary="$root/target/$profile/hushd" ;;
    esac
fi
[ -x "$binary" ] || fail "no hushd binary at $binary"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stage="$work/stage"
doc="$stage/usr/share/doc/hushd"

install -d "$stage/DEBIAN" "$stage/usr/sbin" "$stage/etc/hushd/blocklists" \
    "$stage/usr/lib/systemd/system" "$doc/examples" \
    "$stage/usr/share/man/man5" "$stage/usr/share/man/man8" \
    "$stage/usr/share/bash-completion/completions" \
    "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d"

# The binary, stripped as dh_strip does (line tables stay in the build tree's copy).
install -m 0755 "$binary" "$stage/usr/sbin/hushd"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/sbin/hushd"

# Config and lists: conffiles (listed below), so an admin's edits survive upgrades.
install -m 0644 "$root/systemd/hushd.toml" "$stage/etc/hushd/hushd.toml"
install -m 0644 "$root"/blocklists/*.toml "$stage/etc/hushd/blocklists/"

# The unit runs the packaged binary; nothing else in it changes.
sed 's#/usr/local/bin/hushd#/usr/sbin/hushd#g' "$root/systemd/hushd.service" \
    > "$stage/usr/lib/systemd/system/hushd.service"
chmod 0644 "$stage/usr/lib/systemd/system/hushd.service"
! grep -q /usr/local "$stage/usr/lib/systemd/system/hushd.service" ||
    fail "hushd.service still names /usr/local"

# Man pages and completions, from the binary's own CLI definition and config reference.
mkdir -p "$work/man"
"$stage/usr/sbin/hushd" generate man "$work/man"
for page in "$work"/man/*.[58]; do
    section="${page##*.}"
    gzip -9n < "$page" > "$stage/usr/share/man/man$section/$(basename "$page").gz"
done
"$stage/usr/sbin/hushd" generate completions bash > "$stage/usr/share/bash-completion/completions/hushd"
"$stage/usr/sbin/hushd" generate completions zsh > "$stage/usr/share/zsh/vendor-completions/_hushd"
"$stage/usr/sbin/hushd" generate completions fish > "$stage/usr/share/fish/vendor_completions.d/hushd.fish"

# Documentation: policy compresses what is over 4 KiB, never copyright.
install -m 0644 "$pkg/copyright" "$doc/copyright"
gzip -9n < "$pkg/changelog" > "$doc/changelog.Debian.gz"
gzip -9n < "$root/README.md" > "$doc/README.md.gz"
gzip -9n < "$root/blocklists/README.md" > "$doc/blocklists.md.gz"
gzip -9n < "$root/systemd/README.md" > "$doc/systemd.md.gz"
gzip -9n < "$root/config/README.md" > "$doc/config.md.gz"
install -m 0644 "$pkg/README.Debian" "$doc/README.Debian"
install -D -m 0644 "$pkg/lintian-overrides" "$stage/usr/share/lintian/overrides/hushd"
install -m 0644 "$root/nftables/hushd.nft" "$doc/examples/hushd.nft"
install -m 0644 "$root/systemd/hushd.service.d/nftables.conf" "$doc/examples/nftables.conf"
gzip -9n < "$root/config/hushd.toml" > "$doc/examples/hushd-local.toml.gz"

# Control area: maintainer scripts, conffiles (everything under /etc), md5sums, control.
install -m 0755 "$pkg/postinst" "$pkg/prerm" "$pkg/postrm" "$stage/DEBIAN/"
(cd "$stage" && find etc -type f | sort | sed 's#^#/#') > "$stage/DEBIAN/conffiles"
chmod 0644 "$stage/DEBIAN/conffiles"

# Shared library dependencies, as dh_shlibdeps finds them (it needs a debian/control).
mkdir -p "$work/src/debian"
printf 'Source: hushd\n\nPackage: hushd\nArchitecture: any\n' > "$work/src/debian/control"
shlibs="$(cd "$work/src" && dpkg-shlibdeps -O "$stage/usr/sbin/hushd" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')"
[ -n "$shlibs" ] || fail "dpkg-shlibdeps found no dependencies for hushd"
# deb-systemd-helper and deb-systemd-invoke, used by the maintainer scripts.
depends="$shlibs, init-system-helpers (>= 1.52)"

(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"
size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
sed -e "s/@VERSION@/$debian_version/" -e "s/@ARCH@/$arch/" -e "s/@MAINTAINER@/$maintainer/" \
    -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" "$pkg/control.in" > "$stage/DEBIAN/control"

# Directories 0755, files 0644 unless executable; owned by root whoever builds.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
deb="$out/hushd_${debian_version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"

# shellcheck shell=bash
# Images built locally, since no registry is reachable from this environment:
#   - Debian root filesystems from Debian's packages (debootstrap), cached by
#     their package list under CACHE_DIR;
#   - the runtime base of the prapi images (glibc, libgcc, CA certificates,
#     the nonroot user 65532: what distroless/cc-debian12:nonroot holds);
#   - the Rust builder (Debian + build tools + this machine's Rust toolchain);
#   - prapi and prapi-operator from their Dockerfiles, with those two as build args.
# Every tag carries a hash of its inputs: an image whose tag exists is current.

ROOTFS_CACHE="$CACHE_DIR/kind-rootfs"
DEBIAN_MIRROR="${PRAPI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

image_exists() {
    docker image inspect "$1" >/dev/null 2>&1
}

# prune_older IMAGE: removes the other tags of IMAGE's repository (earlier inputs), so that
# rebuilt local images do not pile up on disk.
prune_older() {
    local repo="${1%:*}" old
    for old in $(docker images "$repo" --format '{{.Repository}}:{{.Tag}}'); do
        [[ $old == "$1" ]] || docker rmi "$old" >/dev/null 2>&1 || true
    done
}

# debian_rootfs NAME PACKAGE,...: path of a debootstrap'd minbase root with
# those packages (built once per package list).
debian_rootfs() {
    local name="$1" packages="$2" key dir
    key="$(inputs_hash <(echo "$DEBIAN_SUITE $packages v1"))"
    dir="$ROOTFS_CACHE/$name-$key"
    if [[ ! -f $dir/.installed ]]; then
        ensure_cmd_from_apt debootstrap debootstrap
        klog "debootstrap $DEBIAN_SUITE ($name, cold: minutes)"
        rm -rf "$dir"
        mkdir -p "$dir"
        step "rootfs-$name" debootstrap --variant=minbase --include="$packages" "$DEBIAN_SUITE" "$dir/root" "$DEBIAN_MIRROR"
        rm -rf "$dir/root/var/cache/apt/archives/"*.deb "$dir/root/var/lib/apt/lists/"*
        touch "$dir/.installed"
    fi
    echo "$dir/root"
}

# import_dir DIR IMAGE [docker import --change ...]: DIR's contents as IMAGE.
import_dir() {
    local dir="$1" image="$2"
    shift 2
    tar -C "$dir" --numeric-owner -c . | docker import "$@" - "$image" >/dev/null
}

# copy_packages ROOTFS DEST PKG...: the files of Debian packages installed in
# ROOTFS (by their dpkg file lists), copied into DEST (merged /usr kept).
copy_packages() {
    local rootfs="$1" dest="$2" p list
    shift 2
    mkdir -p "$dest/usr/bin" "$dest/usr/sbin" "$dest/usr/lib" "$dest/usr/lib64"
    for l in bin sbin lib lib64; do [[ -e $dest/$l ]] || ln -s "usr/$l" "$dest/$l"; done
    for p in "$@"; do
        list="$rootfs/var/lib/dpkg/info/$p.list"
        [[ -f $list ]] || list="$rootfs/var/lib/dpkg/info/$p:amd64.list"
        [[ -f $list ]] || die "package $p is not installed in $rootfs"
        (cd "$rootfs" && while read -r f; do
            if [[ -L .$f || -f .$f ]]; then echo ".$f"; fi
        done <"$list")
    done | sort -u | grep -v -x -E '\./(bin|sbin|lib|lib64)' |
        tar -C "$rootfs" -c -T - | tar -C "$dest" -x --keep-directory-symlink
}

# passwd_files DIR: root and the nonroot user/group 65532 (as in distroless).
passwd_files() {
    local dir="$1"
    mkdir -p "$dir/etc" "$dir/tmp" "$dir/home/nonroot"
    chmod 1777 "$dir/tmp"
    chown 65532:65532 "$dir/home/nonroot"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n' >"$dir/etc/group"
}

BASE_PACKAGES="libc6 libgcc-s1 libssl3 ca-certificates zlib1g netbase tzdata"
BUILDER_PACKAGES="build-essential,pkg-config,perl,python3,cmake,ca-certificates,curl,git,zlib1g-dev,libssl-dev,libcurl4-openssl-dev,libsasl2-dev,libzstd-dev"

# The runtime base image: tag printed.
base_image() {
    local rootfs key image dir
    rootfs="$(debian_rootfs base "${BASE_PACKAGES// /,}")"
    key="$(inputs_hash <(echo "$rootfs $BASE_PACKAGES") "$KIND_DIR/lib/images.sh")"
    image="prapi-local/base:$key"
    if ! image_exists "$image"; then
        klog "building $image from Debian packages"
        dir="$(mktemp -d)"
        # shellcheck disable=SC2086
        copy_packages "$rootfs" "$dir" $BASE_PACKAGES
        passwd_files "$dir"
        # The CA bundle is made by update-ca-certificates at install time: no package lists it.
        install -D -m 0644 "$rootfs/etc/ssl/certs/ca-certificates.crt" "$dir/etc/ssl/certs/ca-certificates.crt"
        rm -rf "$dir/usr/share/doc" "$dir/usr/share/man" "$dir/usr/share/lintian"
        import_dir "$dir" "$image" --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
            --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'
        rm -rf "$dir"
        prune_older "$image"
    fi
    echo "$image"
}

# The Rust builder image: Debian build tools plus this machine's Rust toolchain
# (the one `cargo` runs here); tag printed.
builder_image() {
    local rootfs sysroot version key image dir
    rootfs="$(debian_rootfs builder "$BUILDER_PACKAGES")"
    sysroot="$(rustc --print sysroot)"
    version="$(rustc --version)"
    key="$(inputs_hash <(echo "$rootfs $version") "$KIND_DIR/lib/images.sh" /etc/ssl/certs/ca-certificates.crt)"
    image="prapi-local/rust-builder:$key"
    if ! image_exists "$image"; then
        klog "building $image ($version from $sysroot)"
        dir="$(mktemp -d)"
        # The image's root is the builder rootfs plus the toolchain under /usr/local/rust.
        mkdir -p "$dir/usr/local/rust"
        cp -a "$sysroot/bin" "$sysroot/lib" "$dir/usr/local/rust/"
        rm -rf "$dir/usr/local/rust/lib/rustlib/src"
        tar -C "$rootfs" --numeric-owner -c --exclude=./proc --exclude=./sys --exclude=./dev . |
            tar -C "$dir" -x --keep-directory-symlink
        # The builder downloads crates as this machine does: with the CAs this machine trusts
        # (which include any TLS-inspecting proxy's of its network).
        install -m 0644 /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
        import_dir "$dir" "$image" \
            --change 'ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'WORKDIR /'
        rm -rf "$dir"
        prune_older "$image"
    fi
    echo "$image"
}

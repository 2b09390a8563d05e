# shellcheck shell=bash
# The kind node image, built without a registry (see docs/development.md, kind):
#   - a Debian root (systemd, Debian's containerd and runc, CNI plugins, iptables),
#     made into a kind node the way kind's own base image is (kind's files from
#     the sigs.k8s.io/kind module, its systemd trimming), plus node/entrypoint
#     (cgroup v1 hierarchies) and node/prapi-cni (pod network);
#   - kubelet, kubeadm, kubectl from the test environment's Kubernetes build;
#   - the images kubeadm starts, preloaded into the node's containerd: the
#     control plane, etcd, kube-proxy, CoreDNS and pause, each made by `docker
#     import` of a static binary under the name kubeadm asks for.
# The image's tag is a hash of every input; an existing tag is reused.

NODE_PACKAGES="systemd,systemd-sysv,dbus,iptables,nftables,iproute2,ca-certificates,mount,kmod,udev,containerd,runc,containernetworking-plugins,conntrack,ethtool,socat,util-linux,procps,libseccomp2,pigz,bash,curl,jq,e2fsprogs,findutils"

node_image_name() {
    local key
    key="$(inputs_hash "$KIND_DIR/lib/node.sh" "$KIND_DIR/node/"* "$KIND_DIR/versions.env" \
        "$K8S_HOME/.installed" "$KIND_TOOLS/coredns.installed" "$KIND_TOOLS/pause.installed" \
        <(echo "$NODE_PACKAGES"))"
    echo "prapi-local/kind-node:$K8S_VERSION-$key"
}

# static_image IMAGE DIR BINARY...: an image of static binaries in /usr/local/bin.
static_image() {
    local image="$1" dir="$2"
    shift 2
    mkdir -p "$dir/usr/local/bin"
    passwd_files "$dir"
    install -m 0755 "$@" "$dir/usr/local/bin/"
    import_dir "$dir" "$image" --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin'
}

# The images kubeadm v1.34 starts, saved into one archive for the node's containerd.
control_plane_images() {
    local out="$1" rootfs="$2" work="$3" bin="$K8S_BIN" c
    for c in kube-apiserver kube-controller-manager kube-scheduler; do
        static_image "registry.k8s.io/$c:$K8S_VERSION" "$work/$c" "$bin/$c"
    done
    static_image "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "$work/etcd" "$bin/etcd"
    mkdir -p "$work/pause"
    install -m 0755 "$KIND_TOOLS/bin/pause" "$work/pause/pause"
    import_dir "$work/pause" "registry.k8s.io/pause:$PAUSE_TAG" --change 'ENTRYPOINT ["/pause"]'
    mkdir -p "$work/coredns"
    passwd_files "$work/coredns"
    install -m 0755 "$KIND_TOOLS/bin/coredns" "$work/coredns/coredns"
    # Runs as root, as kubeadm's CoreDNS Deployment expects (it binds port 53 with no file
    # capabilities on the binary; the Deployment drops every capability but NET_BIND_SERVICE).
    import_dir "$work/coredns" "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" \
        --change 'ENTRYPOINT ["/coredns"]'
    # kube-proxy programs iptables (nft backend, as the node's kind entrypoint
    # selects): the files of those Debian packages, plus busybox for a shell.
    local d="$work/kube-proxy"
    copy_packages "$rootfs" "$d" libc6 iptables libxtables12 libip4tc2 libip6tc2 libnftnl11 libmnl0 \
        libnetfilter-conntrack3 libnfnetlink0 conntrack
    for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        ln -sf xtables-nft-multi "$d/usr/sbin/$t"
    done
    install -m 0755 "$(command -v busybox)" "$d/usr/bin/busybox"
    ln -sf busybox "$d/usr/bin/sh"
    mkdir -p "$d/usr/local/bin" "$d/tmp" "$d/run" "$d/var/lib"
    chmod 1777 "$d/tmp"
    install -m 0755 "$bin/kube-proxy" "$d/usr/local/bin/"
    import_dir "$d" "registry.k8s.io/kube-proxy:$K8S_VERSION" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    docker save -o "$out" \
        "registry.k8s.io/kube-apiserver:$K8S_VERSION" "registry.k8s.io/kube-controller-manager:$K8S_VERSION" \
        "registry.k8s.io/kube-scheduler:$K8S_VERSION" "registry.k8s.io/kube-proxy:$K8S_VERSION" \
        "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "registry.k8s.io/pause:$PAUSE_TAG" \
        "registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
}

# preload ROOT ARCHIVE: imports the images into ROOT's containerd content store
# (k8s.io namespace, pinned, as `kind build node-image` does) with a throwaway
# containerd on this host whose root is the node's /var/lib/containerd.
preload() {
    local root="$1" archive="$2" run pid i
    ensure_cmd_from_apt containerd containerd
    run="$(mktemp -d /tmp/prapi-ctrd.XXXXXX)"
    cat >"$run/config.toml" <<CFG
version = 2
root = "$root/var/lib/containerd"
state = "$run/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
[debug]
  address = "$run/debug.sock"
CFG
    containerd --config "$run/config.toml" >"$KIND_LOGS/preload-containerd.log" 2>&1 &
    pid=$!
    for ((i = 0; i < 60; i++)); do
        [[ -S $run/containerd.sock ]] && break
        sleep 0.5
    done
    local status=0
    ctr --address "$run/containerd.sock" -n k8s.io images import --label=io.cri-containerd.pinned=pinned \
        --all-platforms --no-unpack --digests "$archive" >>"$KIND_LOGS/node-image.log" 2>&1 || status=$?
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$run"
    ((status == 0)) || die "preloading images into the node image failed (log: $KIND_LOGS/node-image.log)"
}

# Makes the Debian root a kind node (mirrors kind's images/base/Dockerfile).
node_root() {
    local root="$1" files="$2"
    install -m 0755 "$files"/usr/local/bin/* "$root/usr/local/bin/"
    install -m 0755 "$KIND_DIR/node/entrypoint" "$root/usr/local/bin/entrypoint-prapi"
    mkdir -p "$root/kind/bin"
    install -m 0755 "$files"/kind/bin/* "$root/kind/bin/"
    install -m 0755 "$KIND_DIR/node/prapi-cni" "$root/kind/bin/prapi-cni"
    install -m 0644 "$files/etc/crictl.yaml" "$root/etc/"
    mkdir -p "$root/etc/containerd" "$root/etc/default" "$root/etc/sysctl.d" \
        "$root/etc/systemd/system/kubelet.service.d" "$root/etc/kubernetes/manifests"
    install -m 0644 "$files/etc/containerd/config.toml" "$root/etc/containerd/"
    install -m 0644 "$files/etc/default/kubelet" "$root/etc/default/"
    install -m 0644 "$files"/etc/sysctl.d/* "$root/etc/sysctl.d/"
    install -m 0644 "$files"/etc/systemd/system/*.service "$files/etc/systemd/system/kubelet.slice" \
        "$root/etc/systemd/system/"
    install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
    install -m 0644 "$KIND_DIR/node/prapi-cni.service" "$root/etc/systemd/system/"
    # Debian's containerd and runc where kind's image has its own builds.
    ln -sf /usr/bin/containerd "$root/usr/local/bin/containerd"
    ln -sf /usr/bin/ctr "$root/usr/local/bin/ctr"
    ln -sf /usr/bin/containerd-shim-runc-v2 "$root/usr/local/bin/containerd-shim-runc-v2"
    rm -f "$root"/lib/systemd/system/containerd.service.d/*
    sed -i "s#registry.k8s.io/pause:[0-9.]*\"#registry.k8s.io/pause:$PAUSE_TAG\"#" "$root/etc/containerd/config.toml"
    # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which hosts that lack it
    # cannot give (runc: "can't get final child's PID from pipe"); kind does the
    # same for rootless nodes. Pods' oom_score_adj is then clamped at 0.
    sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$root/etc/containerd/config.toml"
    grep -q 'restrict_oom_score_adj = true' "$root/etc/containerd/config.toml" ||
        die "kind's containerd config has no restrict_oom_score_adj setting to turn on"
    mkdir -p "$root/opt/cni" "$root/etc/cni/net.d"
    rm -rf "$root/opt/cni/bin"
    ln -s /usr/lib/cni "$root/opt/cni/bin"
    rm -f "$root/etc/cni/net.d/"*
    # kind's systemd trimming.
    find "$root/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
    rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
        "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
        "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
    echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
    ln -sf /usr/lib/systemd/systemd "$root/sbin/init"
    mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
    local unit
    for unit in kubelet containerd undo-mount-hacks prapi-cni; do
        ln -sf "/etc/systemd/system/$unit.service" "$root/etc/systemd/system/multi-user.target.wants/$unit.service"
    done
    ln -sf /dev/null "$root/etc/systemd/system/systemd-binfmt.service"
    install -m 0755 "$K8S_BIN/kubeadm" "$K8S_BIN/kubelet" "$K8S_BIN/kubectl" "$root/usr/bin/"
    echo -n "$K8S_VERSION" >"$root/kind/version"
    chroot "$root" ctr oci spec |
        jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' |
        jq 'del(.process.rlimits)' >"$root/etc/containerd/cri-base.json"
}

# Builds the node image if its tag does not exist; prints the tag.
node_image() {
    local image
    image="$(node_image_name)"
    if image_exists "$image"; then
        echo "$image"
        return 0
    fi
    klog "building the node image $image"
    local base work files t0=$SECONDS
    base="$(debian_rootfs node "$NODE_PACKAGES")"
    files="$(module_dir kind "sigs.k8s.io/kind@$KIND_VERSION")/images/base/files"
    [[ -d $files ]] || die "kind's base image files are not in the module: $files"
    work="$(mktemp -d /tmp/prapi-node.XXXXXX)"
    mkdir -p "$work/root"
    tar -C "$base" --numeric-owner -c . | tar -C "$work/root" -x
    node_root "$work/root" "$files"
    control_plane_images "$work/images.tar" "$base" "$work/images"
    rm -rf "$work/root/var/lib/containerd"
    preload "$work/root" "$work/images.tar"
    import_dir "$work/root" "$image-raw" \
        --change 'ENTRYPOINT ["/usr/local/bin/entrypoint-prapi", "/sbin/init"]' --change 'ENV container=docker'
    # `docker import` cannot set a stop signal; systemd as PID 1 wants SIGRTMIN+3.
    printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$image-raw" | DOCKER_BUILDKIT=0 docker build -q -t "$image" - >/dev/null
    docker rmi "$image-raw" >/dev/null
    rm -rf "$work"
    prune_older "$image"
    klog "built $image in $((SECONDS - t0))s"
    echo "$image"
}

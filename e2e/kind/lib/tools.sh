# shellcheck shell=bash
# Go tools of the kind environment, built from the Go module proxy through the
# wrapper modules in e2e/kind/go/<name> (their go.mod/go.sum pin everything):
# kind, CoreDNS, Skipper, kubeconform, the pod sandbox program, and routegroup-check (Skipper's
# RouteGroup validator, for chart-check; not part of the default set). The binaries land in
# CACHE_DIR/kind-tools/bin, rebuilt when a wrapper module changes.

# check_tool_pin NAME MODULE VERSION: the wrapper's go.mod requires that version.
check_tool_pin() {
    grep -Eq "^\s*$2 $3( // indirect)?\$" "$KIND_DIR/go/$1/go.mod" ||
        die "e2e/kind/go/$1/go.mod does not require $2 $3 (versions.env)"
}

# install_tools [NAME...]: builds the named tools (default: all) that are not current.
install_tools() {
    need_cmd go
    check_tool_pin kind sigs.k8s.io/kind "$KIND_VERSION"
    check_tool_pin coredns github.com/coredns/coredns "$COREDNS_VERSION"
    check_tool_pin skipper github.com/zalando/skipper "$SKIPPER_VERSION"
    check_tool_pin routegroup-check github.com/zalando/skipper "$SKIPPER_VERSION"
    check_tool_pin kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION"
    local name pkg module stamp t0 names=("$@")
    ((${#names[@]})) || names=(kind coredns skipper pause kubeconform)
    for name in "${names[@]}"; do
        case $name in
            kind) pkg=sigs.k8s.io/kind module=$pkg ;;
            coredns) pkg=github.com/coredns/coredns module=$pkg ;;
            skipper) pkg=github.com/zalando/skipper/cmd/skipper module=github.com/zalando/skipper ;;
            pause | routegroup-check) pkg=. module= ;;
            kubeconform) pkg=github.com/yannh/kubeconform/cmd/kubeconform module=github.com/yannh/kubeconform ;;
        esac
        stamp="$(wrapper_hash "$KIND_DIR/go/$name") $(go version)"
        if [[ -x $KIND_TOOLS/bin/$name && -f $KIND_TOOLS/$name.installed && $(<"$KIND_TOOLS/$name.installed") == "$stamp" ]]; then
            continue
        fi
        klog "building $name from the Go module proxy (cold: minutes)"
        t0=$SECONDS
        mkdir -p "$KIND_TOOLS/bin"
        # Static binaries: the images that carry them have no libc.
        # A wrapper with a _trim directory builds a trimmed copy of its module (CoreDNS: only
        # the plugins kubeadm's Corefile uses).
        local modfile="$KIND_DIR/go/$name/go.mod"
        [[ -z $module ]] || modfile="$(go_trim_modfile "$KIND_DIR/go/$name" "$module")"
        (cd "$KIND_DIR/go/$name" && step "build-$name" env CGO_ENABLED=0 \
            go build -modfile="$modfile" -trimpath -ldflags='-s -w' -o "$KIND_TOOLS/bin/$name.tmp" "$pkg")
        mv "$KIND_TOOLS/bin/$name.tmp" "$KIND_TOOLS/bin/$name"
        echo "$stamp" >"$KIND_TOOLS/$name.installed"
        klog "built $name in $((SECONDS - t0))s"
    done
}

# Directory of a module in the module cache (downloaded if needed).
module_dir() {
    go_module_dir "$KIND_DIR/go/$1" "$2"
}

# kprov's nspawn machine launcher. kprov runs it as
#   setsid -f unshare --net --mount --propagation private sh -c SCRIPT kprov-nspawn-launch \
#       CLUSTER_NETNS VETH BRIDGE ADDRESS/LEN GATEWAY LOWER UPPER WORK ROOTFS MAC \
#       CGROUP_DIR... -- SYSCTL=VALUE... -- systemd-nspawn ARGS...
# so it already runs in a network and mount namespace of its own; it joins
# the machine's cgroups, makes the machine's network (a veth pair: eth0
# here, the other end on the cluster bridge in CLUSTER_NETNS), sets the
# per-namespace sysctls, mounts the machine's root (an overlay of the node
# image) and becomes systemd-nspawn. The namespaces, the veth pair and the
# overlay live exactly as long as the machine: nothing is left on the host
# when it stops. Values come as arguments, never inside this text.
set -eu
step=starting
trap 'echo "kprov-nspawn-launch: failed while $step (exit status $?)" >&2' EXIT
cluster_netns=$1 veth=$2 bridge=$3 address=$4 gateway=$5
lower=$6 upper=$7 work=$8 rootfs=$9
shift 9
mac=$1
shift
step="joining the machine's cgroups"
while [ "$1" != -- ]; do
    echo $$ > "$1/cgroup.procs"
    shift
done
shift
step="creating the veth pair $veth"
ip link add eth0 address "$mac" type veth peer name "$veth" netns "$cluster_netns"
step="attaching $veth to the cluster bridge $bridge"
nsenter --net="$cluster_netns" ip link set "$veth" master "$bridge" up
step="configuring eth0 ($address via $gateway)"
ip link set lo up
ip addr add "$address" dev eth0
ip link set eth0 up
ip route add default via "$gateway"
# No cloud here: the metadata address answers "unreachable" at once, so
# that the kubelet's cloud credential providers do not wait for timeouts.
ip route add unreachable 169.254.169.254/32
step="setting the network namespace's sysctls"
while [ "$1" != -- ]; do
    sysctl -q -w "$1"
    shift
done
shift
step="mounting the machine's root"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$rootfs"
step="starting systemd-nspawn"
# The trap stays: it runs only if exec fails.
exec "$@"

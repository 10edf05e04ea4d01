#!/usr/bin/env bash
# Builds a local stand-in for SAM's Lambda base image (public.ecr.aws/lambda/provided:al2023) on a
# machine that cannot pull it: a static busybox (SAM's image build runs `mv` and `chmod` in it),
# this host's glibc and loader (the bootstrap links glibc dynamically), and an nsswitch.conf that
# resolves from /etc/hosts first (where `--add-host host.docker.internal:...` writes). SAM adds its
# own aws-lambda-rie on top, as it does to the real image; everything else is SAM's own flow.
#
# usage: scripts/lambda-standin-image.sh [TAG]     (needs docker and a static busybox)
set -euo pipefail
tag=${1:-clayhook/lambda-provided-standin:al2023}
busybox=$(command -v busybox) || { echo "busybox not found (apt-get install -y busybox-static)" >&2; exit 1; }
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  echo "$busybox is not statically linked (apt-get install -y busybox-static)" >&2
  exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,tmp,opt,var/task,var/runtime,var/rapid}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in sh mv chmod cp rm mkdir ls cat env; do ln -s busybox "$root/bin/$applet"; done
# The C library the bootstrap needs, from this host, at the paths the loader looks in.
libdir=$(dirname "$(ldd "$(command -v ls)" | awk '/libc\.so/ {print $3}')")
loader=$(ldd "$(command -v ls)" | awk '/ld-linux/ {print $1}')
mkdir -p "$root$libdir" "$root$(dirname "$loader")"
cp -L "$loader" "$root$loader"
for lib in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libgcc_s.so.1; do
  if [ -e "$libdir/$lib" ]; then cp -L "$libdir/$lib" "$root$libdir/$lib"; fi
done
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\nsbx_user1051:x:993:990::/home/sbx_user1051:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
tar -C "$root" -c . | docker import --change 'WORKDIR /var/task' - "$tag" > /dev/null
echo "$tag"

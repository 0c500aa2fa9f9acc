#!/bin/bash
# PID 1 of the course VM: mount what a machine has, share the checkout in,
# run the job the host wrote (vm/work/<job>.sh), save its output and exit
# status next to it, power off. No services, no network: jobs use loopback
# and network namespaces only.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /sys/fs/cgroup && mkdir -p /sys/fs/cgroup/unified
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
hostname course-vm
ip link set lo up
modprobe 9pnet_virtio 2>/dev/null; modprobe 9p 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 repo /w

job=$(sed -n 's/.*course\.job=\([^ ]*\).*/\1/p' /proc/cmdline)
cd /w
export EBPF_TUTOR_VENV=/opt/ebpf-venv PATH=/opt/ebpf-venv/bin:$PATH HOME=/root
{
  echo "== course VM: $(uname -r), lsm=$(cat /sys/kernel/security/lsm 2>/dev/null)"
  bash scripts/provision.sh --runtime && bash "vm/work/$job.sh"
} > "vm/work/$job.log" 2>&1
echo $? > "vm/work/$job.rc"
sync
echo o > /proc/sysrq-trigger
sleep 10

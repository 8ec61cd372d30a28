"""qemu_colo.py — QEMU 7.2's COLO on the test guest, for bench/colo_bench.py: two QEMU processes (the
primary on hostA with filter-mirror, filter-redirector and colo-compare; the secondary on hostB with
filter-redirector and filter-rewriter, `-incoming`), every filter with vnet_hdr_support=on (virtio-net
frames carry a vnet header: without it colo-compare compares nothing), then `migrate-set-capabilities
x-colo` and `migrate` over the replication link, as in QEMU's docs/COLO-FT.txt. No disks (the guest
has none). The guest cannot use doppel's idle doorbell under QEMU, so both VMs spin."""
import os
import shutil
import subprocess
import time

import netns
from benchlib import QMP

QEMU = shutil.which("qemu-system-x86_64")
VH = "vnet_hdr_support=on"


def _argv(tmp, name, tap, guest, cmdline, mac):
    return [QEMU, "-M", "microvm,acpi=off", "-enable-kvm", "-m", "64M", "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", f"file:{os.path.join(tmp, name + '.serial')}",
            "-device", "isa-debug-exit,iobase=0x501,iosize=2",
            "-qmp", f"unix:{os.path.join(tmp, name + '.qmp')},server=on,wait=off",
            "-netdev", f"tap,id=hn0,ifname={tap},script=no,downscript=no,vhost=off",
            "-device", f"virtio-net-device,netdev=hn0,mac={mac}", "-kernel", guest, "-append", cmdline]


def start(topo, tmp, i, guest, cmdline, mac, serving):
    """Start the pair and enter COLO. Returns (procs, cleanup); raises with QEMU's output on failure."""
    taps = ((topo.hostA, f"qp{i}x"), (topo.hostB, f"qs{i}x"))
    for ns, tap in taps:
        netns.run_in(ns, ["ip", "tuntap", "add", tap, "mode", "tap"], check=True)
        netns.run_in(ns, ["ip", "link", "set", tap, "master", "br0", "up"], check=True)
    pa, sa = f"qp{i}", f"qs{i}"
    prim = netns.REPL_A_IP
    sec = _argv(tmp, sa, taps[1][1], guest, cmdline, mac) + [
        "-chardev", f"socket,id=red0,host={prim},port=9003,reconnect=1",
        "-chardev", f"socket,id=red1,host={prim},port=9004,reconnect=1",
        "-object", f"filter-redirector,id=f1,netdev=hn0,queue=tx,indev=red0,{VH}",
        "-object", f"filter-redirector,id=f2,netdev=hn0,queue=rx,outdev=red1,{VH}",
        "-object", f"filter-rewriter,id=rew0,netdev=hn0,queue=all,{VH}",
        "-incoming", "tcp:0.0.0.0:9998"]
    pri = _argv(tmp, pa, taps[0][1], guest, cmdline, mac) + [
        "-chardev", "socket,id=mirror0,host=0.0.0.0,port=9003,server=on,wait=off",
        "-chardev", "socket,id=compare1,host=0.0.0.0,port=9004,server=on,wait=on",
        "-chardev", "socket,id=compare0,host=127.0.0.1,port=9001,server=on,wait=off",
        "-chardev", "socket,id=compare0-0,host=127.0.0.1,port=9001",
        "-chardev", "socket,id=compare_out,host=127.0.0.1,port=9005,server=on,wait=off",
        "-chardev", "socket,id=compare_out0,host=127.0.0.1,port=9005",
        "-object", f"filter-mirror,id=m0,netdev=hn0,queue=tx,outdev=mirror0,{VH}",
        "-object", f"filter-redirector,netdev=hn0,id=redire0,queue=rx,indev=compare_out,{VH}",
        "-object", f"filter-redirector,netdev=hn0,id=redire1,queue=rx,outdev=compare0,{VH}",
        "-object", "iothread,id=iothread1",
        "-object", "colo-compare,id=comp0,primary_in=compare0-0,secondary_in=compare1,"
                   f"outdev=compare_out0,iothread=iothread1,{VH}"]
    logs = [open(os.path.join(tmp, f"{n}.out"), "w") for n in (sa, pa)]
    procs = [topo.popen(topo.hostB, sec, stdout=logs[0], stderr=subprocess.STDOUT),
             topo.popen(topo.hostA, pri, stdout=logs[1], stderr=subprocess.STDOUT)]

    def cleanup():
        for p in reversed(procs):
            netns.stop_proc(p, timeout=5)
        for f in logs:
            f.close()
        for ns, tap in taps:
            netns.run_in(ns, ["ip", "link", "del", tap])

    def out():
        return " | ".join(open(os.path.join(tmp, f"{n}.out"), errors="replace").read()[-600:] for n in (sa, pa))
    try:
        netns.wait_for(lambda: serving(tmp, pa), 60, what="QEMU primary serving")
        q = QMP(os.path.join(tmp, pa + ".qmp"))
        q.cmd("migrate-set-capabilities", capabilities=[{"capability": "x-colo", "state": True}])
        q.cmd("migrate", uri=f"tcp:{netns.REPL_B_IP}:9998")
        t0 = time.monotonic()
        while (st := q.cmd("query-migrate").get("status")) != "colo":
            if st in ("failed", "cancelled", "completed") or time.monotonic() - t0 > 60:
                raise RuntimeError(f"QEMU COLO did not start (migration {st}): {out()}")
            time.sleep(0.1)
    except Exception:
        cleanup()
        raise
    return q, cleanup

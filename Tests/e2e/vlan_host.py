#!/usr/bin/env python3
"""Hosts on 802.1Q VLANs behind one interface, for the VLAN end-to-end test.

    vlan_host.py IFACE VLAN:IP [VLAN:IP ...]

Answers ARP requests and ICMP echo requests for each IP only when they arrive tagged with
that IP's VLAN, and answers tagged. Works without the kernel's 8021q module: frames are read
and written on an AF_PACKET socket (the kernel moves a received tag into PACKET_AUXDATA).
Prints one line per answered request: "VLAN <id> <arp|icmp> <src ip> -> <ip>".
"""
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def main() -> None:
    iface = sys.argv[1]
    hosts = {}
    for spec in sys.argv[2:]:
        vlan, ip = spec.split(":")
        hosts[(int(vlan), socket.inet_aton(ip))] = ip
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    mac = bytes.fromhex("02000000aa01")
    while True:
        data, anc, _flags, addr = sock.recvmsg(65535, socket.CMSG_LEN(64))
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        vlan = None
        for level, kind, cdata in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= 20:
                status, _, _, _, _, tci = struct.unpack("IIIHHH", cdata[:18])
                if status & TP_STATUS_VLAN_VALID:
                    vlan = tci & 0xFFF
        if len(data) >= 18 and data[12:14] == b"\x81\x00":    # tag left in the data
            vlan = struct.unpack("!H", data[14:16])[0] & 0xFFF
            data = data[:12] + data[16:]
        if vlan is None or len(data) < 42:
            continue
        dst, src, ethertype = data[0:6], data[6:12], struct.unpack("!H", data[12:14])[0]
        tag = b"\x81\x00" + struct.pack("!H", vlan)
        if ethertype == 0x0806 and data[20:22] == b"\x00\x01":      # ARP request
            target = data[38:42]
            if (vlan, target) not in hosts:
                continue
            arp = data[14:20] + b"\x00\x02" + mac + target + data[22:28] + data[28:32]
            sock.send(src + mac + tag + b"\x08\x06" + arp)
            print(f"VLAN {vlan} arp {socket.inet_ntoa(data[28:32])} -> {hosts[(vlan, target)]}", flush=True)
        elif ethertype == 0x0800 and data[23] == 1 and dst == mac:   # ICMP to us
            ihl = (data[14] & 0xF) * 4
            ip = data[14:14 + ihl]
            target = ip[16:20]
            icmp = data[14 + ihl:14 + struct.unpack("!H", ip[2:4])[0]]
            if (vlan, target) not in hosts or not icmp or icmp[0] != 8:
                continue
            body = b"\x00\x00\x00\x00" + icmp[4:]
            body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
            hdr = ip[:8] + b"\x40\x01\x00\x00" + target + ip[12:16] + ip[20:]
            hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
            sock.send(src + mac + tag + b"\x08\x00" + hdr + body)
            print(f"VLAN {vlan} icmp {socket.inet_ntoa(ip[12:16])} -> {hosts[(vlan, target)]}", flush=True)


if __name__ == "__main__":
    main()

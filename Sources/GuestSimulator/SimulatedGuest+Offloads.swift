import Virtio
#if canImport(Glibc)
import Glibc
#endif

extension SimulatedGuest {
    /// Queues one frame for transmission with the given virtio-net header bytes (flags,
    /// gso_type, hdr_len, gso_size, csum_start, csum_offset...), in one descriptor.
    public func transmit(_ frame: [UInt8], header: [UInt8]) {
        let i = freeDesc[1] & (queueSize - 1)
        freeDesc[1] &+= 1
        let buf = bufferOf[1][Int(i)]
        precondition(headerLength + frame.count <= bufferSize, "frame too large for the simulated buffers")
        memset(host(buf), 0, headerLength)
        header.prefix(headerLength).withUnsafeBytes { host(buf).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        frame.withUnsafeBytes { (host(buf) + headerLength).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        writeDescriptor(queue: 1, i, addr: buf, len: UInt32(headerLength + frame.count), flags: 0, next: 0)
        makeAvailable(queue: 1, head: i)
    }

    /// Frames received on queue 0 (single-buffer frames) with their virtio-net header.
    public func receivedFramesWithHeaders() -> [(header: [UInt8], frame: [UInt8])] {
        takeUsed(queue: 0).map { e in
            let buf = host(bufferOf[0][Int(e.id)])
            let n = Int(e.len)
            let all = Array(UnsafeRawBufferPointer(start: buf, count: max(n, headerLength)))
            return (Array(all[..<headerLength]), Array(all[headerLength...]))
        }
    }
}

extension SimulatedGuest {
    /// Frames received on queue 0 over mergeable RX buffers (split rings): each frame's
    /// first buffer starts with the 12-byte header whose num_buffers says how many used
    /// entries it took; their bytes are joined. A frame whose entries are not all there
    /// yet, or a num_buffers of 0, ends the list.
    public func receivedMergedFramesWithHeaders() -> [(header: [UInt8], frame: [UInt8], buffers: Int)] {
        let used = takeUsed(queue: 0)
        var out: [(header: [UInt8], frame: [UInt8], buffers: Int)] = []
        var i = 0
        while i < used.count {
            let first = host(bufferOf[0][Int(used[i].id)])
            guard headerLength == 12, Int(used[i].len) >= 12 else { break }
            let n = Int(first.loadUnaligned(fromByteOffset: 10, as: UInt16.self))
            guard n > 0, i + n <= used.count else { break }
            var bytes: [UInt8] = []
            for e in used[i..<(i + n)] {
                bytes += Array(UnsafeRawBufferPointer(start: host(bufferOf[0][Int(e.id)]), count: Int(e.len)))
            }
            out.append((Array(bytes[..<12]), Array(bytes[12...]), n))
            i += n
        }
        return out
    }
}

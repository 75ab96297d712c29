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

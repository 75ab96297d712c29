// A hostile underlay: the fuzzer's bytes are one received UDP datagram, decoded by the same
// `VxlanCodec.decode` the forwarding thread runs (RFC 7348, 5). It must never trap or read
// past the datagram (AddressSanitizer), and what it accepts must be a well-formed frame.
import Datapath

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // An exact-size copy, so that AddressSanitizer catches any read past the end.
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 1)
    defer { buffer.deallocate() }
    buffer.copyMemory(from: data, byteCount: size)
    let vni: UInt32 = 42
    for maxFrame in [1514 + 4, 9000, 64] {
        switch VxlanCodec.decode(UnsafeRawPointer(buffer), length: size, vniWord: (vni << 8).bigEndian, maxFrame: maxFrame) {
        case .frame(let offset, let length):
            guard offset == 8, length == size - VxlanCodec.headerSize, length >= 14, length <= maxFrame,
                  data[0] & 0x08 != 0, data[4] == 0, data[5] == 0, data[6] == 42 else {
                fatalError("accepted a bad datagram: \(size) bytes, inner \(length)")
            }
        case .drop(let why):
            let fine: Bool
            switch why {
            case .shortHeader: fine = size < 8
            case .noVniFlag: fine = size >= 8 && data[0] & 0x08 == 0
            case .otherVni: fine = size >= 8 && (data[4], data[5], data[6]) != (0, 0, 42)
            case .innerRunt: fine = size >= 8 && size - 8 < 14
            case .innerTooLong: fine = size - 8 > maxFrame
            default: fine = false
            }
            guard fine else { fatalError("dropped for the wrong reason \(why): \(size) bytes") }
        }
        // Geneve (RFC 8926): the same bytes through its codec; whatever it accepts is an
        // Ethernet frame of at least 14 bytes that ends where the datagram ends.
        if case .frame(let offset, let length) = GeneveCodec.decode(UnsafeRawPointer(buffer), length: size,
                                                                     vniWord: (vni << 8).bigEndian, maxFrame: maxFrame) {
            guard offset >= 8, offset + length == size, length >= 14, length <= maxFrame, data[0] >> 6 == 0,
                  data[2] == 0x65, data[3] == 0x58, (data[4], data[5], data[6]) == (0, 0, 42) else {
                fatalError("Geneve accepted a bad datagram: \(size) bytes, inner \(offset)+\(length)")
            }
        }
    }
    return 0
}

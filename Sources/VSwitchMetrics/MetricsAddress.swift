#if canImport(Glibc)
import Glibc
#endif

/// `--metrics HOST:PORT`: a numeric IPv4 address (`127.0.0.1:9101`) or a bracketed IPv6
/// one (`[::1]:9101`). No host names (no resolver at start, no surprise about which
/// interface it binds) and no default host: the metrics name every port and guest, so the
/// operator says where they go, and `0.0.0.0` only if typed.
public struct MetricsAddress: Sendable, Equatable, CustomStringConvertible {
    public enum Family: Sendable, Equatable { case ipv4(in_addr_t), ipv6([UInt8]) }
    public let family: Family
    public let port: UInt16
    public let text: String

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    public init(parsing s: String) throws(Invalid) {
        func bad(_ why: String) -> Invalid {
            Invalid(description: "--metrics '\(s)': \(why) (expected ADDRESS:PORT, e.g. 127.0.0.1:9101 or [::1]:9101)")
        }
        guard let colon = s.lastIndex(of: ":") else { throw bad("no port") }
        var host = String(s[..<colon])
        let portText = s[s.index(after: colon)...]
        guard let port = UInt16(portText), port > 0 else { throw bad("port must be 1-65535") }
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
            var a = in6_addr()
            guard inet_pton(AF_INET6, host, &a) == 1 else { throw bad("not an IPv6 address") }
            family = .ipv6(withUnsafeBytes(of: a) { Array($0) })
        } else {
            var a = in_addr()
            guard !host.isEmpty, inet_pton(AF_INET, host, &a) == 1 else { throw bad("not a numeric IPv4 address") }
            family = .ipv4(a.s_addr)
        }
        self.port = port
        self.text = s
    }

    public var description: String { text }

    /// Calls `body` with this address as a sockaddr.
    func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        switch family {
        case .ipv4(let a):
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            sa.sin_addr.s_addr = a
            return withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .ipv6(let bytes):
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sa.sin6_addr) { $0.copyBytes(from: bytes) }
            return withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
    }

    var domain: Int32 {
        if case .ipv4 = family { return AF_INET }
        return AF_INET6
    }
}

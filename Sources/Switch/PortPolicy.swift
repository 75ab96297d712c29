import Datapath
import SwitchModel
/// A checked VLAN policy and MTU, ready for the engine.
struct PortPolicy: Equatable {
    var access: UInt16?
    var trunks: [UInt16]?
    var native: UInt16?
    var mtu: Int?

    var isDefault: Bool { access == nil && trunks == nil && mtu == nil }

    init(_ spec: PortSpec) throws(SwitchError) {
        func vid(_ v: Int, _ what: String) throws(SwitchError) -> UInt16 {
            guard (1...4094).contains(v) else { throw .invalidOption("invalid \(what) \(v): VLAN ids are 1-4094") }
            return UInt16(v)
        }
        switch spec.vlanMode {
        case nil:
            guard spec.tag == nil, spec.trunks == nil else {
                throw .invalidOption("--tag and --trunks need --vlan-mode access or trunk")
            }
        case "access":
            guard let tag = spec.tag else { throw .invalidOption("--vlan-mode access needs --tag") }
            guard spec.trunks == nil else { throw .invalidOption("--trunks is for --vlan-mode trunk") }
            access = try vid(tag, "--tag")
        case "trunk":
            guard let list = spec.trunks, !list.isEmpty else { throw .invalidOption("--vlan-mode trunk needs --trunks") }
            var vids: [UInt16] = []
            for v in list { vids.append(try vid(v, "VLAN in --trunks")) }
            trunks = vids
            if let tag = spec.tag { native = try vid(tag, "native --tag") }
        case let other?:
            throw .invalidOption("invalid --vlan-mode '\(other)': use access or trunk")
        }
        if let m = spec.mtu {
            guard (68...65535).contains(m) else { throw .invalidOption("invalid --mtu \(m): use 68-65535") }
            mtu = m
        }
    }

    /// For `show`.
    var description: [String: String] {
        var d: [String: String] = [:]
        if let access { d["vlan"] = "access \(access)" }
        if let trunks {
            d["vlan"] = "trunk " + trunks.map(String.init).joined(separator: ",") + (native.map { " native \($0)" } ?? "")
        }
        if let mtu { d["mtu limit"] = String(mtu) }
        return d
    }
}

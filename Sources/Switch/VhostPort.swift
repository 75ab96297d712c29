import Virtio
import Datapath
import SwitchModel
import VhostUser

/// Connects a vhost-user device (control thread) to its port slot in the forwarding
/// engine: every call is handed to the forwarding thread and acknowledged.
final class VhostPortBackend: VhostUserBackend {
    let engine: ForwardingEngine
    let slot: Int

    init(engine: ForwardingEngine, slot: Int) {
        self.engine = engine
        self.slot = slot
    }

    func startQueue(_ config: VringConfiguration) {
        let slot = self.slot
        engine.sync { $0.startQueue(port: slot, config) }
    }

    func stopQueue(_ index: Int) -> UInt16 {
        let slot = self.slot
        return engine.sync { $0.stopQueue(port: slot, queue: index) }
    }

    func updateCallFd(_ index: Int, _ fd: Int32?) {
        let slot = self.slot
        engine.sync { $0.updateCallFd(port: slot, queue: index, fd: fd) }
    }

    func setDirtyLog(_ log: DirtyLog?) {
        let slot = self.slot
        engine.sync { $0.setDirtyLog(port: slot, log) }
    }

    func announce(mac: [UInt8]) {
        let slot = self.slot
        engine.sync { $0.announce(port: slot, mac: mac) }
    }
}

/// VXLAN tunnel ports on the forwarding thread (see the VXLAN port issue): not built yet.
extension ForwardingEngine {
    func receiveFromTunnel(port p: Int) -> Int { 0 }

    func sendToTunnel(port d: Int, frameLength: Int, sourceHeader: Int) {
        ports[d].counters.unsafelyUnwrapped.add(.txDropNoBuffers)
    }
}

import CaptureWriter
import SwitchModel
import Control
import Switch
import VhostUser

/// `capture` requests: the control server hands them here (`ControlServer.streamer`). The
/// capture is set up on the control loop thread (bridge and port names live there); the
/// stream then runs on the request's own connection thread, so the loop is never held up.
enum LiveCapture {
    static func streamer(controller: SwitchController, loop: EventLoop) -> ControlServer.Streamer {
        { request, fd in
            guard request.command == .capture else { return nil }
            guard let bridge = request.bridge else { return (.failure("request is missing 'bridge'"), nil) }
            let started: Result<CaptureSession, SwitchError> = loop.sync {
                Result { () throws(SwitchError) -> CaptureSession in
                    try controller.startLiveCapture(bridge: bridge, port: request.watchPort ?? request.port,
                                                    direction: request.direction, filter: request.filter,
                                                    snaplen: request.snaplen, count: request.count,
                                                    format: request.captureFormat, buffer: request.captureBuffer,
                                                    socket: fd)
                }
            }
            switch started {
            case .failure(let e):
                return (.failure(e.description), nil)
            case .success(let session):
                return (.success(), {
                    let end = session.runWriter(peer: fd)
                    session.detach()
                    controller.logger.info("live capture ended", metadata: [
                        "bridge": "\(bridge)", "reason": "\(end)", "frames": "\(session.framesWritten)",
                        "dropped": "\(session.framesDropped)"])
                })
            }
        }
    }
}

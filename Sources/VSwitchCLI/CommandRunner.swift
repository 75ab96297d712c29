import SwitchModel
import ArgumentParser
import Control
import Foundation

/// What every subcommand does after parsing: build a request, send it, print the answer.
public protocol ControlSubcommand: ParsableCommand {
    var global: GlobalOptions { get }
    /// The request this invocation sends. Pure, so tests can check parsing without a daemon.
    func makeRequest() -> ControlRequest
    /// Text output for a successful response; "" prints nothing (like ovs-vsctl on success).
    func renderText(_ result: ControlResult?) -> String
}

extension ControlSubcommand {
    public func renderText(_ result: ControlResult?) -> String { "" }

    public func run() throws {
        if let f = global.format.captureFormat, makeRequest().type != .pcap {
            throw fail("--format \(f) is a capture format: use it with capture or add-port --type pcap")
        }
        let response: ControlResponse
        do {
            response = try ControlClient(path: global.socketPath).send(makeRequest())
        } catch {
            throw fail("\(error)")
        }
        guard response.ok else { throw fail(response.error ?? "request failed (no error message)") }
        let output: String
        switch global.format {
        case .text, .pcap, .pcapng: output = renderText(response.result)
        case .json: output = TextRendering.json(response.result)
        }
        if !output.isEmpty { print(output, terminator: output.hasSuffix("\n") ? "" : "\n") }
    }
}

/// Prints "vswitch: message" to stderr and returns exit status 1 to throw, which
/// ArgumentParser turns into a plain exit without usage text or a stack trace.
func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("vswitch: \(message)\n".utf8))
    return .failure
}

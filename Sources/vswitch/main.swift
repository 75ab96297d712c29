// The `vswitch` control CLI. All logic lives in VSwitchCLI so tests can drive it.
import VSwitchCLI
#if canImport(Glibc)
import Glibc
#endif

// Installed into Wireshark's extcap folder as a symlink named `vswitch-extcap`, the binary
// speaks the extcap interface with Wireshark's arguments as they come (docs/capture.md).
if let argv0 = CommandLine.arguments.first, argv0.split(separator: "/").last?.hasPrefix("vswitch-extcap") == true {
    exit(ExtcapTool(arguments: Array(CommandLine.arguments.dropFirst())).run())
}
VSwitchCommand.main()

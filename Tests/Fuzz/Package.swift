// swift-tools-version:5.4
// libFuzzer targets. A separate package because SwiftPM >= 5.5 renames an executable's
// entry point, which breaks linking with -sanitize=fuzzer. Run with Tests/Fuzz/run.
import PackageDescription

let package = Package(
    name: "vswitch-fuzz",
    dependencies: [.package(name: "vswitch", path: "../..")],
    targets: [
        .executableTarget(name: "FuzzForwarding", dependencies: [
            .product(name: "SwitchForFuzzing", package: "vswitch"),
        ]),
        .executableTarget(name: "FuzzPackedForwarding", dependencies: [
            .product(name: "SwitchForFuzzing", package: "vswitch"),
        ]),
        .executableTarget(name: "FuzzVhostUser", dependencies: [
            .product(name: "SwitchForFuzzing", package: "vswitch"),
        ]),
        .executableTarget(name: "FuzzVxlan", dependencies: [
            .product(name: "SwitchForFuzzing", package: "vswitch"),
        ]),
        .executableTarget(name: "FuzzTap", dependencies: [
            .product(name: "SwitchForFuzzing", package: "vswitch"),
        ]),
    ]
)

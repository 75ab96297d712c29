// swift-tools-version:5.9
import PackageDescription

// Dependencies point one way:
//   CShims -> Virtio -> VhostUser -> Switch -> vswitchd
//   Control (wire protocol only) -> VSwitchCLI -> vswitch, and Control -> vswitchd
let package = Package(
    name: "vswitch",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "vswitchd", targets: ["vswitchd"]),
        .executable(name: "vswitch", targets: ["vswitch"]),
        // For the fuzzing package in Tests/Fuzz (it depends on this one by path).
        .library(name: "SwitchForFuzzing", targets: ["Switch", "GuestSimulator", "VhostUser"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .target(name: "CShims"),
        .target(name: "Virtio", dependencies: ["CShims"]),
        .target(name: "VhostUser", dependencies: ["CShims", "Virtio", .product(name: "Logging", package: "swift-log")]),
        .target(name: "Switch", dependencies: ["CShims", "Virtio", "VhostUser", .product(name: "Logging", package: "swift-log")]),
        .target(name: "Control", dependencies: ["CShims"]),  // CShims: SO_PEERCRED
        // A virtio-net driver simulated in memfd memory: tests and the microbenchmark.
        .target(name: "GuestSimulator", dependencies: ["CShims", "Virtio", "VhostUser"]),
        .executableTarget(name: "vswitchd", dependencies: [
            "Switch", "Control", "VhostUser",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "VSwitchCLI", dependencies: [
            "Control",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "vswitch", dependencies: ["VSwitchCLI"]),
        // Benchmarks (see Benchmarks/README.md).
        .target(name: "MallocCounter", path: "Benchmarks/MallocCounter"),
        .executableTarget(name: "vswitch-microbench", dependencies: [
            "Switch", "GuestSimulator", "CShims", "MallocCounter",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Benchmarks/Microbench"),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "CShims", "GuestSimulator"]),
        .testTarget(name: "VhostUserTests", dependencies: ["VhostUser", "Virtio", "CShims", "GuestSimulator"]),
        .testTarget(name: "SwitchTests", dependencies: ["Switch", "Virtio", "VhostUser", "CShims", "GuestSimulator"]),
        .testTarget(name: "ControlTests", dependencies: ["Control", "VSwitchCLI"]),
    ]
)

// swift-tools-version:5.9
import PackageDescription

// Modules by plane; dependencies point one way (README "Architecture", docs/architecture.md):
//   CShims -> Virtio -> VhostUser (and Syscalls: the control plane's EINTR convention)
//   SwitchModel (value types: port kinds, specs, snapshots, counters, errors)
//   CShims, Virtio, SwitchModel -> Datapath (the forwarding engine; no VhostUser, no libpcap)
//   Datapath, CPcap -> CaptureWriter (libpcap writer threads)
//   Datapath, CaptureWriter, VhostUser -> Switch (control plane: SwitchController, port objects)
//   CShims, SwitchModel, Syscalls -> Control (wire protocol; never the data plane) -> VSwitchCLI -> vswitch
//   Switch, Control -> vswitchd
let package = Package(
    name: "vswitch",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "vswitchd", targets: ["vswitchd"]),
        .executable(name: "vswitch", targets: ["vswitch"]),
        // For the fuzzing package in Tests/Fuzz (it depends on this one by path).
        .library(name: "SwitchForFuzzing", targets: ["Datapath", "GuestSimulator", "VhostUser"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // vswitchd --metrics: Prometheus text format (swift-prometheus builds on swift-metrics).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .target(name: "CShims"),
        .target(name: "Virtio", dependencies: ["CShims"]),
        // The control plane's EINTR convention (Syscall.retrying); not for the hot path.
        .target(name: "Syscalls"),
        .target(name: "VhostUser", dependencies: ["CShims", "Virtio", "Syscalls", .product(name: "Logging", package: "swift-log")]),
        // libpcap (libpcap-dev) for capture ports and live capture.
        .systemLibrary(name: "CPcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"])]),
        .target(name: "SwitchModel"),
        .target(name: "Datapath", dependencies: ["CShims", "Virtio", "SwitchModel", .product(name: "Logging", package: "swift-log")]),
        .target(name: "CaptureWriter", dependencies: ["CShims", "CPcap", "Datapath", "SwitchModel"]),
        .target(name: "Switch", dependencies: ["CShims", "Virtio", "VhostUser", "SwitchModel", "Datapath", "CaptureWriter",
                                               .product(name: "Logging", package: "swift-log")]),
        .target(name: "Control", dependencies: ["CShims", "SwitchModel", "Syscalls"]),  // CShims: SO_PEERCRED
        // vswitchd --metrics: /metrics text from a snapshot, and its small HTTP server.
        .target(name: "VSwitchMetrics", dependencies: ["SwitchModel", "Syscalls",
                                                .product(name: "Prometheus", package: "swift-prometheus"),
                                                .product(name: "CoreMetrics", package: "swift-metrics")]),
        // A virtio-net driver simulated in memfd memory: tests and the microbenchmark.
        .target(name: "GuestSimulator", dependencies: ["CShims", "Virtio", "VhostUser"]),
        .executableTarget(name: "vswitchd", dependencies: [
            "Switch", "SwitchModel", "Datapath", "CaptureWriter", "Control", "VhostUser", "VSwitchMetrics",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "VSwitchCLI", dependencies: [
            "Control", "SwitchModel", "CShims",  // CShims: the terminal size for `vswitch top`
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "vswitch", dependencies: ["VSwitchCLI"]),
        // Benchmarks (see Benchmarks/README.md).
        .target(name: "MallocCounter", path: "Benchmarks/MallocCounter"),
        .executableTarget(name: "vswitch-microbench", dependencies: [
            "Datapath", "CaptureWriter", "GuestSimulator", "CShims", "Virtio", "MallocCounter",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Benchmarks/Microbench"),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "CShims", "GuestSimulator"]),
        .testTarget(name: "VhostUserTests", dependencies: ["VhostUser", "Virtio", "CShims", "GuestSimulator"]),
        .testTarget(name: "SwitchTests", dependencies: ["Switch", "SwitchModel", "Datapath", "CaptureWriter", "Virtio", "VhostUser",
                                                      "CShims", "CPcap", "GuestSimulator"]),
        .testTarget(name: "ControlTests", dependencies: ["Control", "VSwitchCLI", "SwitchModel"]),
        .testTarget(name: "VSwitchMetricsTests", dependencies: ["VSwitchMetrics", "SwitchModel"]),
    ]
)

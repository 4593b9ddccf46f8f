// swift-tools-version:5.9
// The RoomState Swift package: the engine as an XCFramework (built by
// scripts/build-xcframework.sh), the generated bindings, and a small Swift layer.
import PackageDescription

let package = Package(
    name: "RoomState",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "RoomState", targets: ["RoomState"]),
    ],
    targets: [
        .binaryTarget(name: "RoomStateFFI", path: "RoomStateFFI.xcframework"),
        .target(name: "RoomState", dependencies: ["RoomStateFFI"], path: "Sources/RoomState"),
        .testTarget(name: "RoomStateTests", dependencies: ["RoomState"], path: "Tests/RoomStateTests"),
    ]
)

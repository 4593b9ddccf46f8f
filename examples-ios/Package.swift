// swift-tools-version:6.0
// The example app's package: the app's logic (RoomExampleModel, no UI imports, tested on
// Linux against a real server), and the terminal version of the example
// (roomstate-example). The SwiftUI screens are in App/, outside this package's targets:
// they go into an Xcode iOS app target that adds this package (README.md).
//
// RoomState is the Swift package in ../bindings/swift, added by path (its identity is its
// folder's name, `swift`). On Linux the engine is the cargo build's libroomstate.so: tell
// the linker where it is (test.sh does):
//   swift build -Xlinker -L../target/debug -Xlinker -rpath -Xlinker ../target/debug
import PackageDescription

let package = Package(
    name: "RoomExample",
    // Observation (@Observable) needs iOS 17 / macOS 14.
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "RoomExampleModel", targets: ["RoomExampleModel"]),
        .executable(name: "roomstate-example", targets: ["roomstate-example"]),
    ],
    dependencies: [
        .package(path: "../bindings/swift"),
    ],
    targets: [
        .target(
            name: "RoomExampleModel",
            dependencies: [.product(name: "RoomState", package: "swift")]
        ),
        .executableTarget(
            name: "roomstate-example",
            dependencies: ["RoomExampleModel", .product(name: "RoomState", package: "swift")]
        ),
        .testTarget(
            name: "RoomExampleModelTests",
            dependencies: [
                "RoomExampleModel",
                .product(name: "RoomState", package: "swift"),
                .product(name: "RoomStateTesting", package: "swift"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

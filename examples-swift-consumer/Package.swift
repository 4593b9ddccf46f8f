// swift-tools-version:6.0
// A consumer of the RoomState Swift package, added by path as an app would add it today.
// scripts/test-swift.sh builds it (so the README's Swift code compiles) and runs it
// against a real server.
import PackageDescription

let package = Package(
    name: "RoomStateConsumer",
    platforms: [.iOS(.v15), .macOS(.v12)],
    // README:begin
    dependencies: [
        .package(path: "../bindings/swift"),
    ],
    targets: [
        .executableTarget(
            name: "RoomStateConsumer",
            dependencies: [.product(name: "RoomState", package: "swift")]
        ),
    ],
    // README:end
    swiftLanguageModes: [.v6]
)

// swift-tools-version:6.0
// The RoomState Swift package: the engine's C interface (RoomStateFFI), the Swift code
// UniFFI generates from it (Sources/RoomState/Generated) and a small Swift layer.
//
// Run scripts/bindings.sh first: it builds the engine and generates the Swift, the C
// header and the module map (none of them committed). On Apple platforms the engine is
// RoomStateFFI.xcframework (scripts/build-xcframework.sh). On Linux it is the cargo
// build's libroomstate.so, linked through the generated module map; tell the linker where
// it is: swift build -Xlinker -L<target>/debug (scripts/test-swift.sh does).
import PackageDescription

#if os(Linux)
let engine: Target = .systemLibrary(name: "RoomStateFFI", path: "Generated/RoomStateFFI")
#else
let engine: Target = .binaryTarget(name: "RoomStateFFI", path: "RoomStateFFI.xcframework")
#endif

let package = Package(
    name: "RoomState",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "RoomState", targets: ["RoomState"]),
        // For tests only: a real server process and waiting helpers, shared by this
        // package's tests, examples-ios and the Flutter plugin's iOS side.
        .library(name: "RoomStateTesting", targets: ["RoomStateTesting"]),
    ],
    targets: [
        engine,
        .target(name: "RoomState", dependencies: ["RoomStateFFI"], path: "Sources/RoomState"),
        .target(name: "RoomStateTesting", path: "Sources/RoomStateTesting"),
        .testTarget(name: "RoomStateTests", dependencies: ["RoomState", "RoomStateTesting"], path: "Tests/RoomStateTests"),
    ],
    swiftLanguageModes: [.v6]
)

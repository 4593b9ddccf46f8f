// swift-tools-version:6.0
// The iOS side of the roomstate Flutter plugin, in Flutter's Swift Package Manager plugin
// layout (ios/roomstate/Package.swift, Sources/roomstate). The same package is what Flutter
// builds into an app and what ../test.sh tests on Linux with `swift test`:
//
// - Sources/roomstate: RoomStateChannelHandler (plain Swift, Foundation only: every method
//   and event channel of ../../CHANNELS.md) and RoomStatePlugin (the FlutterPlugin adapter,
//   compiled only where Flutter can be imported).
// - Tests/roomstateTests: XCTest against real `roomstate serve` processes (ROOMSTATE_BIN).
//
// It depends on the RoomState Swift package (bindings/swift) by path. Flutter links this
// folder into the app's generated packages (ios/Flutter/ephemeral/Packages/.packages/),
// next to its FlutterFramework package, so the path to the bindings is taken from where
// this folder really is, and FlutterFramework is a dependency only where it exists (a
// Flutter build; Flutter before 3.44 put the framework on the search path instead).
import Foundation
import PackageDescription

let here = URL(fileURLWithPath: Context.packageDirectory)
let bindings = here.resolvingSymlinksInPath()
    .appendingPathComponent("../../../../bindings/swift").standardizedFileURL.path
let flutterFramework = here.deletingLastPathComponent().appendingPathComponent("FlutterFramework").path
let inFlutterBuild = FileManager.default.fileExists(atPath: flutterFramework)

var dependencies: [Package.Dependency] = [.package(path: bindings)]
var pluginDependencies: [Target.Dependency] = [.product(name: "RoomState", package: "swift")]
if inFlutterBuild {
    dependencies.append(.package(name: "FlutterFramework", path: flutterFramework))
    pluginDependencies.append(.product(name: "FlutterFramework", package: "FlutterFramework"))
}

let package = Package(
    name: "roomstate",
    platforms: [.iOS("15.0"), .macOS("12.0")],
    products: [
        .library(name: "roomstate", targets: ["roomstate"]),
    ],
    dependencies: dependencies,
    targets: [
        .target(name: "roomstate", dependencies: pluginDependencies, path: "Sources/roomstate"),
        .testTarget(
            name: "roomstateTests",
            dependencies: [
                "roomstate",
                .product(name: "RoomState", package: "swift"),
                .product(name: "RoomStateTesting", package: "swift"),
            ],
            path: "Tests/roomstateTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)

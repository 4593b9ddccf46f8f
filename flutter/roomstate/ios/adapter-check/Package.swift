// swift-tools-version:6.0
// Type-checks the plugin's FlutterPlugin adapter (../roomstate/Sources/roomstate/
// RoomStatePlugin.swift, which a Linux build of ../roomstate skips) on Linux, in the Swift 6
// language mode with warnings as errors, against FlutterStandIn: Flutter's iOS API as Swift
// imports it from FlutterPlugin.h and FlutterChannels.h, written out by hand. Only the names,
// types and concurrency of what the adapter uses are checked: not Flutter itself, which
// needs an app's Xcode build. ../test.sh builds it; nothing runs.
import PackageDescription

let package = Package(
    name: "adapter-check",
    platforms: [.iOS("15.0"), .macOS("12.0")],
    dependencies: [.package(path: "../../../../bindings/swift")],
    targets: [
        // Objective-C's view of the API: Swift 5 mode, so that its two sentinels can be the
        // mutable globals Swift makes of `extern NSObject const* ...`.
        .target(name: "Flutter", path: "Sources/FlutterStandIn", swiftSettings: [.swiftLanguageMode(.v5)]),
        // The plugin's own sources (a link to ../roomstate/Sources/roomstate), with Flutter.
        .target(name: "roomstate", dependencies: ["Flutter", .product(name: "RoomState", package: "swift")], path: "Sources/roomstate"),
    ],
    swiftLanguageModes: [.v6]
)

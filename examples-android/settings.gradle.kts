// The example app for Android Studio: the Compose app (:app), its logic (:model, plain
// Kotlin, tested on the JVM with Maven: see README.md) and the roomstate Android library,
// built from this repository's bindings/android. Run scripts/build-aar.sh once first: it
// puts the engine's .so files and the generated Kotlin bindings where that build expects them.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "roomstate-example"
include(":app", ":model")

// The library by path. An app of your own would use the AAR instead (see README.md).
includeBuild("../bindings/android") {
    dependencySubstitution {
        substitute(module("io.roomstate:roomstate-android")).using(project(":"))
    }
}

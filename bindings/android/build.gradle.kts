// The Android library (AAR): the engine's .so files for each ABI (scripts/build-aar.sh puts
// them in src/main/jniLibs), the generated bindings, and the Kotlin layer shared with the
// JVM build in ../kotlin.
plugins {
    id("com.android.library") version "8.7.3"
    kotlin("android") version "2.1.21"
    kotlin("plugin.serialization") version "2.1.21"
    `maven-publish`
}

group = "io.roomstate"
version = "0.1.0"

android {
    namespace = "io.roomstate"
    compileSdk = 35
    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
    }
    sourceSets["main"].java.srcDirs(
        "../kotlin/src/main/kotlin",
        "build/generated/uniffi",
    )
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
    publishing { singleVariant("release") }
}

// `./gradlew publishToMavenLocal` makes io.roomstate:roomstate-android:0.1.0, which the
// Flutter plugin and other Gradle builds depend on by coordinate.
publishing {
    publications {
        register<MavenPublication>("release") {
            artifactId = "roomstate-android"
            afterEvaluate { from(components["release"]) }
        }
    }
}

dependencies {
    // The AAR flavour of JNA carries its native dispatch library for every ABI.
    implementation("net.java.dev.jna:jna:5.17.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.10.2")
    implementation("org.jetbrains.kotlinx:kotlinx-serialization-json:1.8.1")
}

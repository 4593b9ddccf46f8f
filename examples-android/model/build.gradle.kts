// The model in Android Studio: an Android library module (it depends on the roomstate
// Android library), with the same sources the Maven build (pom.xml) compiles and tests on
// the JVM. The sources use no Android API.
plugins {
    id("com.android.library")
    kotlin("android")
    kotlin("plugin.serialization")
}

android {
    namespace = "io.roomstate.example.model"
    compileSdk = 35
    defaultConfig {
        minSdk = 24
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    // The tests in src/test start a roomstate server and load the engine built for this
    // computer: they run with Maven (see README.md), not in this build.
    sourceSets["test"].java.setSrcDirs(emptyList<String>())
    sourceSets["test"].kotlin.setSrcDirs(emptyList<String>())
}

kotlin {
    compilerOptions {
        jvmTarget.set(org.jetbrains.kotlin.gradle.dsl.JvmTarget.JVM_17)
    }
}

dependencies {
    // The roomstate Android library (settings.gradle.kts says where it comes from).
    api("io.roomstate:roomstate-android:0.1.0")
    // What its API is made of: the library declares these as implementation dependencies.
    api("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.10.2")
    implementation("org.jetbrains.kotlinx:kotlinx-serialization-json:1.8.1")
    implementation("net.java.dev.jna:jna:5.17.0@aar")
}

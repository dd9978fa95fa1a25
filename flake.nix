{
  description = "ccproxy: programmable LLM API gateway and traffic inspector, built on Pingora";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = import nixpkgs { inherit system; };

        ccproxy = pkgs.rustPlatform.buildRustPackage {
          pname = "ccproxy";
          version = "0.1.0";
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;

          # boring-sys builds BoringSSL with cmake; bindgenHook provides libclang.
          nativeBuildInputs = with pkgs; [
            cmake
            pkg-config
            perl
            git
            rustPlatform.bindgenHook
          ];

          # Integration tests bind sockets and spawn processes; run them via `make test`.
          doCheck = false;

          meta = {
            description = "Programmable LLM API gateway and traffic inspector for coding agents, built on Pingora";
            license = pkgs.lib.licenses.mit;
            mainProgram = "ccproxy";
          };
        };
      in
      {
        packages.default = ccproxy;
        packages.ccproxy = ccproxy;

        apps.default = flake-utils.lib.mkApp {
          drv = ccproxy;
          exePath = "/bin/ccproxy";
        };

        devShells.default = pkgs.mkShell {
          packages = with pkgs; [
            rustc
            cargo
            clippy
            rustfmt
            cmake
            clang
            llvmPackages.libclang
            pkg-config
            perl
            git
            gnumake
            curl
          ];

          LIBCLANG_PATH = "${pkgs.llvmPackages.libclang.lib}/lib";
        };

        formatter = pkgs.nixpkgs-fmt;
      });
}

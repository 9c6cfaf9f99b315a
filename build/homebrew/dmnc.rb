# Homebrew formula for dmnc. The checked-in file is the template: before a release,
# build/homebrew/render_formula.py fills in @REPOSITORY@, @VERSION@ and @SDIST_SHA256@ (see build/README.md).
# Python resources are pinned to the versions of build/requirements.txt (tests/unit/test_packaging.py checks it).
class Dmnc < Formula
  include Language::Python::Virtualenv

  desc "Reach Docker containers by IP from the host through a WireGuard tunnel into the Docker VM"
  homepage "https://github.com/@REPOSITORY@"
  url "https://github.com/@REPOSITORY@/releases/download/v@VERSION@/dmnc-@VERSION@.tar.gz"
  sha256 "@SDIST_SHA256@"
  license "MIT"
  head "https://github.com/@REPOSITORY@.git", branch: "main"

  depends_on "libsodium"
  depends_on "python@3.13"

  uses_from_macos "libffi"

  resource "anyio" do
    url "https://files.pythonhosted.org/packages/source/a/anyio/anyio-4.16.0.tar.gz"
    sha256 "59bb03251907983d1603d27c3087ddb1e93299ea2163adcdba37899a4fb12ffb"
  end

  resource "attrs" do
    url "https://files.pythonhosted.org/packages/source/a/attrs/attrs-26.1.0.tar.gz"
    sha256 "d03ceb89cb322a8fd706d4fb91940737b6642aa36998fe130a9bc96c985eff32"
  end

  resource "certifi" do
    url "https://files.pythonhosted.org/packages/source/c/certifi/certifi-2026.10.18.tar.gz"
    sha256 "b9995d97b64d0431a5af837d8ca8cd6238104d1f319f04bd93ea43124d6c861e"
  end

  resource "cffi" do
    url "https://files.pythonhosted.org/packages/source/c/cffi/cffi-2.1.1.tar.gz"
    sha256 "dd31f52ea1086513bb9df30f8fcee9b8918323ae067a3d5b78bc826a000712be"
  end

  resource "dnspython" do
    url "https://files.pythonhosted.org/packages/source/d/dnspython/dnspython-2.9.2.tar.gz"
    sha256 "8d4d39a513e649d634004ce4d39ade2352efcea472a0247535a5c2d18a9d7ba9"
  end

  resource "h11" do
    url "https://files.pythonhosted.org/packages/source/h/h11/h11-0.16.0.tar.gz"
    sha256 "4e35b956cf45792e4caa5885e69fba00bdbc6ffafbfa020300e549b208ee5ff1"
  end

  resource "httpcore" do
    url "https://files.pythonhosted.org/packages/source/h/httpcore/httpcore-1.0.9.tar.gz"
    sha256 "6e34463af53fd2ab5d807f399a9b45ea31c3dfa2276f15a2c3f00afff6e176e8"
  end

  resource "httpx" do
    url "https://files.pythonhosted.org/packages/source/h/httpx/httpx-0.28.1.tar.gz"
    sha256 "75e98c5f16b0f35b567856f597f06ff2270a374470a5c2392242528e3e3e42fc"
  end

  resource "idna" do
    url "https://files.pythonhosted.org/packages/source/i/idna/idna-3.20.tar.gz"
    sha256 "a7db850025b95ded1eae8a46181a1a6c56c92c96f0e2b005d9ff8dc0210cab44"
  end

  resource "jeepney" do
    url "https://files.pythonhosted.org/packages/source/j/jeepney/jeepney-0.9.0.tar.gz"
    sha256 "cf0e9e845622b81e4a28df94c40345400256ec608d0e55bb8a3feaa9163f5732"
  end

  resource "outcome" do
    url "https://files.pythonhosted.org/packages/source/o/outcome/outcome-1.3.0.post0.tar.gz"
    sha256 "9dcf02e65f2971b80047b377468e72a268e15c0af3cf1238e6ff14f7f91143b8"
  end

  resource "pycparser" do
    url "https://files.pythonhosted.org/packages/source/p/pycparser/pycparser-3.12.tar.gz"
    sha256 "f03387877eab82ce01bbdfd0ba7252ee55a90b1c708d5129e2ce915475cf1db6"
  end

  resource "pynacl" do
    url "https://files.pythonhosted.org/packages/source/p/pynacl/pynacl-1.6.2.tar.gz"
    sha256 "018494d6d696ae03c7e656e5e74cdfd8ea1326962cc401bcf018f1ed8436811c"
  end

  resource "sniffio" do
    url "https://files.pythonhosted.org/packages/source/s/sniffio/sniffio-1.3.1.tar.gz"
    sha256 "f4324edc670a0f49750a81b895f35c3adb843cca46f0530f79fc1babb23789dc"
  end

  resource "sortedcontainers" do
    url "https://files.pythonhosted.org/packages/source/s/sortedcontainers/sortedcontainers-2.4.0.tar.gz"
    sha256 "25caa5a06cc30b6b83d11423433f65d1f9d76c4c6a0c90e3379eaa43b9bfdb88"
  end

  resource "trio" do
    url "https://files.pythonhosted.org/packages/source/t/trio/trio-0.35.0.tar.gz"
    sha256 "7efb295c78a0ecd1235c5759e620b5da564ca80d2efcb0055423588547248b96"
  end

  resource "trio-websocket" do
    url "https://files.pythonhosted.org/packages/source/t/trio-websocket/trio_websocket-0.12.2.tar.gz"
    sha256 "22c72c436f3d1e264d0910a3951934798dcc5b00ae56fc4ee079d46c7cf20fae"
  end

  resource "typing-extensions" do
    url "https://files.pythonhosted.org/packages/source/t/typing-extensions/typing_extensions-4.16.0.tar.gz"
    sha256 "dc983d19a509c94dba722ee6abd33940f7c05a89e243c47e907eb4db6f1a43e5"
  end

  resource "wsproto" do
    url "https://files.pythonhosted.org/packages/source/w/wsproto/wsproto-1.3.2.tar.gz"
    sha256 "b86885dcf294e15204919950f666e06ffc6c7c114ca900b060d6e16293528294"
  end

  def install
    # PyNaCl links Homebrew's libsodium instead of compiling the copy bundled in its sdist.
    ENV["SODIUM_INSTALL"] = "system"
    virtualenv_install_with_resources
  end

  # `sudo brew services start dmnc`: dmnc needs root for its utun/TUN device and host routes; launchd (or systemd on
  # Linux) restarts it if it exits. dmnc stays in the foreground and shuts down cleanly on SIGTERM.
  service do
    run [opt_bin/"dmnc"]
    require_root true
    keep_alive true
    log_path var/"log/dmnc.log"
    error_log_path var/"log/dmnc.log"
  end

  def caveats
    <<~EOS
      dmnc must run as root. Start it now and at every boot with:
        sudo brew services start dmnc
      or run it in the foreground with:
        sudo #{opt_bin}/dmnc

      Use one dmnc service only: Homebrew's (homebrew.mxcl.dmnc) or the one `dmnc service install` writes
      (io.github.dmnc), never both; `dmnc doctor` flags the pair.

      `sudo brew services start` runs the service as root and makes parts of the keg root-owned (brew services
      warns "Taking root:admin ownership of some dmnc paths"), which breaks a plain `brew upgrade`. To upgrade:
        sudo brew services stop dmnc
        sudo chown -R "$(whoami)" "$(brew --prefix)/Cellar/dmnc"
        brew upgrade dmnc
        sudo brew services start dmnc

      Coming from docker-mac-net-connect: it holds the same tunnel addresses and VM interface (chip0). Stop it
      first, then restart Docker (or delete its chip0) before starting dmnc:
        sudo brew services stop docker-mac-net-connect
      While it runs, dmnc in the foreground refuses to start, and the dmnc service waits (`dmnc status` says why).
    EOS
  end

  test do
    assert_equal "dmnc #{version}", shell_output("#{bin}/dmnc --version").strip
    # A staged install needs no root and shows the installed package and its entry point work end to end.
    system bin/"dmnc", "service", "install", "--root", testpath, "--executable", opt_bin/"dmnc"
    service_file = OS.mac? ? "Library/LaunchDaemons/io.github.dmnc.plist" : "etc/systemd/system/dmnc.service"
    assert_path_exists testpath/service_file
  end
end

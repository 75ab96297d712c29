/// The release this source tree is: `Tools/package` names the .deb after it, and
/// `vswitchd --metrics` reports it in `vswitch_build_info`. Change it when cutting a release.
public enum VSwitchVersion {
    public static let string = "0.1.0"
}

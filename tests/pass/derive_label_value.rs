//! `#[derive(LabelValue)]` on a fieldless enum: variants become snake_case
//! labels unless renamed with `#[label = "..."]`.

use hyperkit_obs::{LabelValue, track_build};

#[derive(Clone, Copy, LabelValue)]
enum Chain {
    Ethereum,
    #[label = "bsc"]
    BinanceSmartChain,
    ZkSyncEra,
}

#[track_build(chain)]
fn build(chain: Chain) -> Chain {
    chain
}

use test_support::metrics::counter_total as counter;

fn main() {
    assert_eq!(
        <Chain as LabelValue>::VALUES,
        Some(&["ethereum", "bsc", "zk_sync_era"][..])
    );
    assert_eq!(Chain::BinanceSmartChain.as_label(), "bsc");
    assert_eq!(Chain::ZkSyncEra.index(), 2);

    for chain in [
        Chain::Ethereum,
        Chain::BinanceSmartChain,
        Chain::BinanceSmartChain,
        Chain::ZkSyncEra,
    ] {
        build(chain);
    }
    let builds = |chain| {
        counter(
            "hyperkit_builds_total",
            &[("chain", chain), ("status", "success")],
        )
    };
    assert_eq!(builds("ethereum"), 1);
    assert_eq!(builds("bsc"), 2);
    assert_eq!(builds("zk_sync_era"), 1);
    assert_eq!(builds("binance_smart_chain"), 0);
}

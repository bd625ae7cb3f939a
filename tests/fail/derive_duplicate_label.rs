use hyperkit_obs::LabelValue;

#[derive(LabelValue)]
enum Chain {
    #[label = "bsc"]
    BinanceSmartChain,
    #[label = "bsc"]
    BnbChain,
}

fn main() {}

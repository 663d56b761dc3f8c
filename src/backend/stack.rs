//! `Stack`: a plugin and its filters, opened as one chain per connection.
//! Must not import tokio or rhai.

use super::{debug, plugin_layer, Backend, Export, Filter, Peer, Plugin, Result};
use std::sync::Arc;

/// The plugin plus the filters stacked over it. `filters[0]` is the first
/// `--filter` named, nearest the client, as in nbdkit.
#[derive(Clone)]
pub struct Stack {
    pub plugin: Arc<dyn Plugin>,
    pub filters: Vec<Arc<dyn Filter>>,
}

impl Stack {
    pub fn new(plugin: Arc<dyn Plugin>) -> Self {
        Stack {
            plugin,
            filters: Vec::new(),
        }
    }

    pub fn with_filters(plugin: Arc<dyn Plugin>, filters: Vec<Arc<dyn Filter>>) -> Self {
        Stack { plugin, filters }
    }

    /// A client connected: every filter's `preconnect`, outermost first;
    /// the first error refuses the connection.
    pub fn preconnect(&self, peer: &Peer, readonly: bool) -> Result<()> {
        self.filters
            .iter()
            .try_for_each(|f| f.preconnect(peer, readonly))
    }

    /// Open the chain bottom-up: the plugin (in its plugin layer, see
    /// [`plugin_layer`]), then each filter from the innermost to the
    /// outermost. Returns the outermost layer.
    pub fn open_chain(&self, readonly: bool, export_name: &str) -> Result<Arc<dyn Backend>> {
        self.open_chain_tls(readonly, export_name, false)
    }

    /// [`Stack::open_chain`] for a connection that uses TLS or not.
    pub fn open_chain_tls(
        &self,
        readonly: bool,
        export_name: &str,
        tls: bool,
    ) -> Result<Arc<dyn Backend>> {
        let name = self.plugin.name();
        debug::open(&name, readonly, export_name, tls);
        let plugin = plugin_layer::wrap(self.plugin.open(readonly, export_name)?);
        let mut layer = debug::wrap(name, plugin);
        for f in self.filters.iter().rev() {
            let name = f.name();
            debug::open(&name, readonly, export_name, tls);
            match f.open_export(layer.clone(), readonly, export_name, tls) {
                Ok(l) => layer = debug::wrap(name, l),
                Err(e) => {
                    layer.close();
                    return Err(e);
                }
            }
        }
        Ok(layer)
    }

    /// Open the chain and negotiate: the server's view of one connection.
    pub fn open(&self, readonly: bool, export_name: &str) -> Result<Export> {
        self.open_tls(readonly, export_name, false)
    }

    /// [`Stack::open`] for a connection that uses TLS or not.
    pub fn open_tls(&self, readonly: bool, export_name: &str, tls: bool) -> Result<Export> {
        let top = self.open_chain_tls(readonly, export_name, tls)?;
        match Export::negotiate(top.clone(), readonly) {
            Ok(e) => Ok(e),
            Err(e) => {
                top.close();
                Err(e)
            }
        }
    }

    /// Export names for NBD_OPT_LIST.
    pub fn list_exports(&self) -> Vec<(String, String)> {
        self.plugin.list_exports()
    }
}

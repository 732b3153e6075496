//! The permission names of the Extra Horizon Tasks Service, plus the ones of the triggers
//! resource this service adds. A caller holds them as plain strings (token claim or gateway
//! header); `EXECUTE_*:<functionName>` variants grant one function only.

/// Every global permission an endpoint can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    ViewTasks,
    CreateTasks,
    CancelTasks,
    ViewTaskLogs,
    ViewTaskFunctions,
    ViewTaskFunctionDetails,
    CreateTaskFunction,
    UpdateTaskFunction,
    DeleteTaskFunction,
    ExecuteTaskFunction,
    ExecuteApiFunction,
    ViewTaskSchedules,
    CreateTaskSchedule,
    DeleteTaskSchedule,
    ViewApiFunctionRequests,
    ViewApiFunctionRequestLogs,
    ViewTaskTriggers,
    CreateTaskTrigger,
    UpdateTaskTrigger,
    DeleteTaskTrigger,
}

impl Permission {
    pub const ALL: [Permission; 20] = [
        Permission::ViewTasks,
        Permission::CreateTasks,
        Permission::CancelTasks,
        Permission::ViewTaskLogs,
        Permission::ViewTaskFunctions,
        Permission::ViewTaskFunctionDetails,
        Permission::CreateTaskFunction,
        Permission::UpdateTaskFunction,
        Permission::DeleteTaskFunction,
        Permission::ExecuteTaskFunction,
        Permission::ExecuteApiFunction,
        Permission::ViewTaskSchedules,
        Permission::CreateTaskSchedule,
        Permission::DeleteTaskSchedule,
        Permission::ViewApiFunctionRequests,
        Permission::ViewApiFunctionRequestLogs,
        Permission::ViewTaskTriggers,
        Permission::CreateTaskTrigger,
        Permission::UpdateTaskTrigger,
        Permission::DeleteTaskTrigger,
    ];

    pub fn name(self) -> &'static str {
        use Permission::*;
        match self {
            ViewTasks => "VIEW_TASKS",
            CreateTasks => "CREATE_TASKS",
            CancelTasks => "CANCEL_TASKS",
            ViewTaskLogs => "VIEW_TASK_LOGS",
            ViewTaskFunctions => "VIEW_TASK_FUNCTIONS",
            ViewTaskFunctionDetails => "VIEW_TASK_FUNCTION_DETAILS",
            CreateTaskFunction => "CREATE_TASK_FUNCTION",
            UpdateTaskFunction => "UPDATE_TASK_FUNCTION",
            DeleteTaskFunction => "DELETE_TASK_FUNCTION",
            ExecuteTaskFunction => "EXECUTE_TASK_FUNCTION",
            ExecuteApiFunction => "EXECUTE_API_FUNCTION",
            ViewTaskSchedules => "VIEW_TASK_SCHEDULES",
            CreateTaskSchedule => "CREATE_TASK_SCHEDULE",
            DeleteTaskSchedule => "DELETE_TASK_SCHEDULE",
            ViewApiFunctionRequests => "VIEW_API_FUNCTION_REQUESTS",
            ViewApiFunctionRequestLogs => "VIEW_API_FUNCTION_REQUEST_LOGS",
            ViewTaskTriggers => "VIEW_TASK_TRIGGERS",
            CreateTaskTrigger => "CREATE_TASK_TRIGGER",
            UpdateTaskTrigger => "UPDATE_TASK_TRIGGER",
            DeleteTaskTrigger => "DELETE_TASK_TRIGGER",
        }
    }
}

/// What an endpoint asks of its caller before the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone, without credentials (health, metrics, the OpenAPI document).
    Public,
    /// A caller holding this permission.
    Permission(Permission),
    /// Decided by the handler from the function's `permissionMode` (execute, API functions).
    FunctionMode,
    /// A route missing from the table: refused, so a new route is never open by accident.
    Unlisted,
}

/// The requirement of every route, keyed by method and route pattern. One table, so the
/// permissions table of docs/security.md and the code cannot drift apart unnoticed (a test walks it).
pub fn requirement(method: &str, route: &str) -> Requirement {
    use Permission::*;
    // The router answers HEAD with the GET handler (its status and `Content-Length` tell what
    // the body would hold), so HEAD needs exactly what GET needs.
    let method = if method == "HEAD" { "GET" } else { method };
    let route = anonymous_parameters(route);
    let permission = match (method, route.as_str()) {
        ("GET", "/tasks/v1") => ViewTasks,
        ("POST", "/tasks/v1") => CreateTasks,
        ("POST", "/tasks/v1/{}/cancel") => CancelTasks,
        ("GET", "/tasks/v1/{}/logs") => ViewTaskLogs,
        ("GET", "/tasks/v1/functions") => ViewTaskFunctions,
        ("POST", "/tasks/v1/functions") => CreateTaskFunction,
        ("GET", "/tasks/v1/functions/{}") => ViewTaskFunctionDetails,
        ("PUT", "/tasks/v1/functions/{}") => UpdateTaskFunction,
        ("DELETE", "/tasks/v1/functions/{}") => DeleteTaskFunction,
        (_, "/tasks/v1/functions/{}/enable" | "/tasks/v1/functions/{}/disable") => {
            UpdateTaskFunction
        }
        ("GET", "/tasks/v1/schedules") => ViewTaskSchedules,
        ("POST", "/tasks/v1/schedules") => CreateTaskSchedule,
        ("DELETE", "/tasks/v1/schedules/{}") => DeleteTaskSchedule,
        ("GET", "/tasks/v1/triggers" | "/tasks/v1/triggers/{}") => ViewTaskTriggers,
        ("POST", "/tasks/v1/triggers") => CreateTaskTrigger,
        ("PUT", "/tasks/v1/triggers/{}") => UpdateTaskTrigger,
        ("DELETE", "/tasks/v1/triggers/{}") => DeleteTaskTrigger,
        ("GET", "/tasks/v1/apiRequests") => ViewApiFunctionRequests,
        ("GET", "/tasks/v1/apiRequests/{}/logs") => ViewApiFunctionRequestLogs,
        (_, "/tasks/v1/functions/{}/execute") => return Requirement::FunctionMode,
        (_, route) if route.starts_with("/tasks/v1/api/") => return Requirement::FunctionMode,
        (
            "GET",
            "/healthz" | "/readyz" | "/metrics" | "/tasks/v1/health" | "/tasks/v1/openapi.json",
        ) => return Requirement::Public,
        _ => return Requirement::Unlisted,
    };
    Requirement::Permission(permission)
}

/// `/tasks/v1/{task_id}/cancel` and `/tasks/v1/{taskId}/cancel` → `/tasks/v1/{}/cancel`: the
/// router and the OpenAPI document name parameters differently.
fn anonymous_parameters(route: &str) -> String {
    let mut out = String::with_capacity(route.len());
    let mut inside = false;
    for c in route.chars() {
        match c {
            '{' => {
                inside = true;
                out.push('{');
            }
            '}' => {
                inside = false;
                out.push('}');
            }
            _ if inside => {}
            _ => out.push(c),
        }
    }
    out
}

/// The two kinds of function call whose permission depends on the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionCall {
    Execute,
    Api,
}

impl FunctionCall {
    pub fn permission(self) -> Permission {
        match self {
            FunctionCall::Execute => Permission::ExecuteTaskFunction,
            FunctionCall::Api => Permission::ExecuteApiFunction,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Permission::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Permission::ALL.len());
    }

    #[test]
    fn only_health_metrics_and_the_document_are_public() {
        assert_eq!(requirement("GET", "/healthz"), Requirement::Public);
        assert_eq!(requirement("POST", "/healthz"), Requirement::Unlisted);
        assert_eq!(
            requirement("GET", "/tasks/v1/new-route"),
            Requirement::Unlisted
        );
        assert_eq!(
            requirement("POST", "/tasks/v1/{task_id}/cancel"),
            Requirement::Permission(Permission::CancelTasks)
        );
        assert_eq!(
            requirement("PATCH", "/tasks/v1/api/{function_name}/{*path}"),
            Requirement::FunctionMode
        );
    }

    #[test]
    fn head_needs_what_get_needs() {
        for route in [
            "/tasks/v1",
            "/tasks/v1/{task_id}/logs",
            "/tasks/v1/functions/{name}",
            "/tasks/v1/triggers/{trigger_id}",
            "/tasks/v1/apiRequests",
            "/healthz",
        ] {
            assert_eq!(
                requirement("HEAD", route),
                requirement("GET", route),
                "{route}"
            );
        }
    }
}
